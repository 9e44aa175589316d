//! The Python half of quarry's front end (`py/`) is compiled into the binary by
//! `py_freeze!`, which cargo cannot see into: rebuild when any of it changes.
fn main() {
    println!("cargo:rerun-if-changed=py");
}
