/*
 * paddock-init: pid 1 of a jailed sandbox's PID namespace.
 *
 * A freestanding static program (no libc, raw system calls, about 2 KB of code) that
 * paddock-proc's build script compiles and embeds; the spawner writes it once into a
 * sealed memfd and the jail's init process `execveat`s it right after it has started the
 * program. Because the init execs, the clone that makes it can share the spawner's memory
 * (vfork-like) instead of copying it: this image is all the init ever maps.
 *
 * Entered with every signal blocked (the init blocked them before it started the program,
 * and the mask survives execve), so no signal is lost before the loop below waits for it:
 * pid 1 ignores an unhandled signal, but a blocked one stays pending.
 *
 *   argv[1]  the program's pid (in the new namespace)
 *   argv[2]  the spawn's error pipe (inherited without close-on-exec), or -1
 *   argv[3]  flags: 1 = change the uid and gid, 2 = also clear the supplementary groups
 *   argv[4]  uid
 *   argv[5]  gid
 *
 * It then, in order: names itself `paddock-init` and becomes non-dumpable; drops to the
 * jail's uid and gid, an empty capability set and no_new_privs (a failure is reported on
 * the error pipe as paddock-proc's `RawStage::Init` with index 4..8, then exit 127);
 * closes every fd (the error pipe too, which tells the spawner the start is complete);
 * then forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH and SIGCONT
 * to the program, reaps every child, and exits with the program's status once the
 * program is reaped (128 + signal when a signal killed it). The kernel then kills what is
 * left of the namespace.
 */

#include <asm/unistd.h>
#include <linux/capability.h>
#include <linux/prctl.h>

typedef unsigned long u64;

#if defined(__x86_64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call init_main\n"
        "  hlt\n");

/* A system call with four arguments; the fifth (which prctl checks) is always 0. */
static long sc(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = 0;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return r;
}
#elif defined(__aarch64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  bl init_main\n"
        "  brk #0\n");

static long sc(long n, long a, long b, long c, long d) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = 0;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
                     : "memory");
    return x0;
}
#else
#error "paddock-init supports x86_64 and aarch64"
#endif

/* The same numbers on x86_64 and aarch64 (asm-generic). */
#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGTERM 15
#define SIGCHLD 17
#define SIGCONT 18
#define SIGWINCH 28
#define WNOHANG 1

/* paddock-proc's `RawStage::Init`. */
#define STAGE_INIT 14

static __attribute__((noreturn)) void die(long err_fd, long ret, unsigned idx) {
    unsigned buf[3];
    buf[0] = STAGE_INIT;
    buf[1] = (unsigned)(-ret); /* the errno */
    buf[2] = idx;
    if (err_fd >= 0)
        sc(__NR_write, err_fd, (long)buf, sizeof buf, 0);
    for (;;)
        sc(__NR_exit_group, 127, 0, 0, 0);
}

static long number(const char *s) {
    long v = 0, neg = 0;
    if (!s)
        return -1;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (*s++ - '0');
    return neg ? -v : v;
}

__attribute__((used, noreturn)) void init_main(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    if (argc < 6)
        die(-1, -22, 9);
    long program = number(argv[1]);
    long err_fd = number(argv[2]);
    long flags = number(argv[3]);
    long uid = number(argv[4]);
    long gid = number(argv[5]);
    long r;

    sc(__NR_prctl, PR_SET_NAME, (long)"paddock-init", 0, 0);
    if ((r = sc(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0)) < 0)
        die(err_fd, r, 3);
    if (flags & 1) {
        if ((flags & 2) && (r = sc(__NR_setgroups, 0, 0, 0, 0)) < 0)
            die(err_fd, r, 4);
        if ((r = sc(__NR_setresgid, gid, gid, gid, 0)) < 0)
            die(err_fd, r, 5);
        if ((r = sc(__NR_setresuid, uid, uid, uid, 0)) < 0)
            die(err_fd, r, 6);
    }
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    if ((r = sc(__NR_capset, (long)&header, (long)data, 0, 0)) < 0)
        die(err_fd, r, 7);
    if ((r = sc(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0)) < 0)
        die(err_fd, r, 8);
    /* Nothing of the spawn's stays open here: the program has its own copies. */
    if (sc(__NR_close_range, 0, ~0U, 0, 0) < 0)
        for (long fd = 0; fd < 1024; fd++)
            sc(__NR_close, fd, 0, 0, 0);

    u64 all = ~0UL;
    unsigned char info[128];
    for (;;) {
        long sig = sc(__NR_rt_sigtimedwait, (long)&all, (long)info, 0, sizeof all);
        if (sig == SIGCHLD) {
            for (;;) {
                int status = 0;
                long pid = sc(__NR_wait4, -1, (long)&status, WNOHANG, 0);
                if (pid <= 0)
                    break;
                if (pid == program) {
                    long code = (status & 0x7f) == 0 ? (status >> 8) & 0xff
                                                     : 128 + (status & 0x7f);
                    for (;;)
                        sc(__NR_exit_group, code, 0, 0, 0);
                }
            }
        } else if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT ||
                   sig == SIGUSR1 || sig == SIGUSR2 || sig == SIGWINCH || sig == SIGCONT) {
            sc(__NR_kill, program, sig, 0, 0);
        }
    }
}
