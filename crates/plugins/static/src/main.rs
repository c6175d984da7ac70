//! `static`: see the library (`static_ipam`), which delegating plugins also carry.

fn main() {
    cni::skel::run(static_ipam::Static)
}
