//! The migrations are embedded at compile time (refinery's `embed_migrations!`): rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
