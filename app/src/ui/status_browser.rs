//! In the browser there is no response status to set.

/// Does nothing: the status belongs to the server's response.
pub fn set(_code: u16) {}
