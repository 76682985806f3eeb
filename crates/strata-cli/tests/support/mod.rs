pub mod cluster;
pub mod disk;
