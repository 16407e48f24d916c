//! Symantec Endpoint Protection log parsers.
