//! The `vhost-user` transport (being written).
