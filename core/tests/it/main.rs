//! Integration tests of deeplake-core: one binary, one module per area.

mod corrupt;
mod storage;
