//! watchpost filters (being written).
