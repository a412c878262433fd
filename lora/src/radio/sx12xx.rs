//! TODO(helper): see radio/mod.rs
