//! paddock-supervisor
