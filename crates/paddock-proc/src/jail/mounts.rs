//! The parent side of a jail's filesystem: the flat list of mount operations the child runs
//! (`sys::mount`), planned from a [`Filesystem`].

use super::{Filesystem, Jail};
use crate::SpawnError;
use crate::command::Namespaces;
use crate::sys::RawFs;

/// A planned filesystem, owning everything [`RawFs`] points to.
pub(crate) struct PreparedFs {
    raw: Box<RawFs>,
}

impl PreparedFs {
    /// Plan `fs`.
    pub(crate) fn new(
        _fs: &Filesystem,
        _jail: &Jail,
        _ns: Namespaces,
    ) -> Result<PreparedFs, SpawnError> {
        Err(SpawnError::Invalid(
            "jail filesystems are not supported yet".into(),
        ))
    }

    /// The raw view for the child.
    pub(crate) fn raw(&self) -> *const RawFs {
        &*self.raw
    }

    /// The operation with index `idx`, for an error message.
    pub(crate) fn describe(&self, _idx: u32) -> String {
        String::new()
    }
}
