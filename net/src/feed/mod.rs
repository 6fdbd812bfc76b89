//! Feed sources. The simulator is built in and on by default; the publish API lives in `routes` and
//! `session`.

pub mod simulator;
