//! Seccomp filters, compiled to BPF in the parent and installed by the child last before
//! `execve` (`seccomp(SECCOMP_SET_MODE_FILTER)`).

/// A compiled seccomp BPF program (classic BPF, `struct sock_filter` instructions).
#[derive(Clone)]
pub struct SeccompFilter {
    insns: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for SeccompFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompFilter")
            .field("instructions", &self.insns.len())
            .finish()
    }
}

impl SeccompFilter {
    /// A filter of these raw instructions (not validated here; the kernel checks it when the
    /// child installs it).
    pub fn from_instructions(insns: Vec<libc::sock_filter>) -> SeccompFilter {
        SeccompFilter { insns }
    }

    /// The instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.insns
    }
}
