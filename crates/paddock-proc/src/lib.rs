//! paddock-proc
