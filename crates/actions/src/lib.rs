//! watchpost actions (being written).
