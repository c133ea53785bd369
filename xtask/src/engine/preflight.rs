//! Bad input changes nothing: what would keep services from starting is
//! found before anything is stopped, killed or written.

use super::{Checkout, containers, setup};
use crate::system::files;
use crate::system::records;
use crate::system::registry::Registry;

/// What would keep `names` from starting: `ports.toml`'s steps and programs,
/// the container engine and what a container needs (`containers::check`),
/// a record that cannot be read, the registry, a generated file that leads
/// out of the checkout, a folder this user may not write. (`ports.toml` and
/// the port book were read with the checkout.)
pub fn check(checkout: &Checkout, names: &[String]) -> anyhow::Result<()> {
    let project = &checkout.project;
    setup::check(checkout, names)?;
    containers::check(checkout, names)?;
    records::check_all(&project.root)?;
    Registry::open()?;
    files::check_inside(&project.root, &[project.ports_json(), project.env_runtime()])?;
    let generated = [project.ports_json(), project.env_runtime(), Registry::file()?];
    files::check_writable(&[project.pids_dir(), project.logs_dir()], &generated)
}
