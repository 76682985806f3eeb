//! The server configuration: etcd's flags, their defaults and their checks.
