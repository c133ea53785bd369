//! Whose a container is: the names and labels a checkout gives its
//! containers, and the owner of any container read back from its labels.

use std::path::Path;

use super::listing::Container;
use crate::model::names::to_label;

/// The checkout a container was started for, as an absolute path.
pub const CHECKOUT_LABEL: &str = "dev.xtask.checkout";
/// The `ports.toml` service a container runs.
pub const SERVICE_LABEL: &str = "dev.xtask.service";
/// Set by compose on every container of a project (`up` cannot add labels of ours).
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The compose file's service a container of a project runs.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// A checkout as its containers carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The checkout's root: the label, exact, so that no other checkout's
    /// containers ever match a filter of ours.
    root: String,
    /// `xtask-<slug>-<hash16>`: readable in `docker ps`, one per checkout.
    prefix: String,
}

/// Who a container belongs to, from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Run by this checkout for its service of that name.
    Ours(String),
    /// In this checkout's compose project, for the compose file's service of that name.
    OursInCompose(String),
    /// Another checkout's: its root, or the name of its compose project.
    OtherCheckout(String),
    /// Not the runner's: a container someone else started.
    Foreign,
}

impl Identity {
    /// The identity of the checkout at `root`, an absolute path. It is
    /// valid UTF-8 (`Project::find` makes sure), so the label is exact.
    pub fn of(root: &Path) -> Identity {
        let root = root.to_string_lossy().into_owned();
        let name = Path::new(&root).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Identity { prefix: format!("xtask-{}-{:016x}", slug(&name), hash64(&root)), root }
    }

    /// The checkout's root, as its containers' label says it.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The container name of `service` (a `ports.toml` name: `[a-z][a-z0-9_-]*`).
    /// Docker's names allow `_`, which stays: mapping it to `-` would give
    /// `a_b` and `a-b` one name. (Our containers are on the default bridge,
    /// where names are never looked up in DNS.)
    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}", self.prefix)
    }

    /// The compose project of this checkout. Compose lowercases a project
    /// name and drops all but `[a-z0-9_-]`; ours is already so, so the
    /// name we filter by is the name compose uses.
    pub fn project(&self) -> &str {
        &self.prefix
    }

    /// The `KEY=VALUE` labels of the container of `service`.
    pub fn labels(&self, service: &str) -> [String; 2] {
        [format!("{CHECKOUT_LABEL}={}", self.root), format!("{SERVICE_LABEL}={service}")]
    }

    /// A `docker ps --filter` matching every container this checkout ran, and no other's.
    pub fn filter(&self) -> String {
        format!("label={CHECKOUT_LABEL}={}", self.root)
    }

    /// A `docker ps --filter` matching the containers of this checkout's compose project.
    pub fn project_filter(&self) -> String {
        format!("label={PROJECT_LABEL}={}", self.prefix)
    }

    /// Who `container` belongs to, seen from this checkout.
    pub fn owner(&self, container: &Container) -> Owner {
        if let Some(root) = &container.checkout {
            return match root == &self.root {
                true => Owner::Ours(container.service.clone().unwrap_or_default()),
                false => Owner::OtherCheckout(root.clone()),
            };
        }
        match &container.project {
            Some(project) if project == &self.prefix => {
                Owner::OursInCompose(container.compose_service.clone().unwrap_or_default())
            }
            Some(project) if is_ours_in_form(project) => Owner::OtherCheckout(project.clone()),
            _ => Owner::Foreign,
        }
    }
}

/// The folder's name, readable in a container name: its DNS label (as a
/// checkout's name is made), at most 20 characters.
fn slug(name: &str) -> String {
    let label = to_label(name).unwrap_or_else(|| "checkout".into());
    label[..label.len().min(20)].trim_end_matches('-').to_owned()
}

/// FNV-1a of the root, all 64 bits: stable across runs and Rust releases
/// (std's hasher promises neither), so a container started by one build of
/// the runner has the name the next build looks for. Two roots of one
/// 32-bit hash are found in seconds; with 64 bits a name (and a compose
/// project, which has no label of ours) is one checkout's. The label still
/// says whose a container is.
fn hash64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A project name of the form this runner gives: `xtask-<slug>-<16 hex
/// digits>`, or 8 as earlier runners gave (another checkout's, never ours).
fn is_ours_in_form(project: &str) -> bool {
    let Some((rest, hash)) = project.rsplit_once('-') else { return false };
    rest.starts_with("xtask-")
        && matches!(hash.len(), 8 | 16)
        && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_unique_per_checkout() {
        let rows = [
            ("/src/app", "xtask-app-"),
            ("/home/Ann/My Project.v2", "xtask-my-project-v2-"),
            ("/w/__ünïcode__", "xtask-n-code-"),
            ("/w/a-very-long-folder-name-indeed", "xtask-a-very-long-folder-n-"),
            ("/w/---", "xtask-checkout-"),
            ("/", "xtask-checkout-"),
        ];
        for (root, start) in rows {
            let id = Identity::of(Path::new(root));
            let name = id.container("web_1");
            assert!(name.starts_with(start), "{root}: {name}");
            let (prefix, service) = name.split_at(start.len() + 16);
            assert_eq!((prefix, service), (id.project(), "-web_1"), "{root}");
            // Docker's container names, and compose's project names as compose keeps them.
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            assert!(name.as_bytes()[0].is_ascii_alphanumeric(), "{name}");
            assert!(is_ours_in_form(id.project()), "{root}");
        }
        // Two checkouts of one folder name (worktrees elsewhere) differ.
        let (a, b) = (Identity::of(Path::new("/a/app")), Identity::of(Path::new("/b/app")));
        assert_ne!(a.container("web"), b.container("web"));
        assert_ne!(a.filter(), b.filter());
    }

    /// Stable: a runner built later finds the containers an earlier one named.
    #[test]
    fn the_hash_is_fixed() {
        assert_eq!(hash64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Identity::of(Path::new("/src/app")).project(), "xtask-app-36118851a1fd8860");
    }

    /// Two roots whose 32-bit hashes met (the folded FNV-1a of earlier
    /// runners) have names and projects of their own.
    #[test]
    fn roots_of_one_short_hash_have_names_of_their_own() {
        let (a, b) = (Identity::of(Path::new("/tmp/hc/7098/app")), Identity::of(Path::new("/tmp/hc/21099/app")));
        assert_ne!(a.container("web"), b.container("web"));
        assert_ne!(a.project(), b.project());
        // The digits of the name: 16 of them.
        let hash = a.project().rsplit_once('-').unwrap().1;
        assert_eq!(hash.len(), 16, "{}", a.project());
    }

    #[test]
    fn labels_and_filters() {
        let id = Identity::of(Path::new("/src/a,b=c"));
        assert_eq!(id.labels("db"), ["dev.xtask.checkout=/src/a,b=c".to_owned(), "dev.xtask.service=db".to_owned()]);
        assert_eq!(id.filter(), "label=dev.xtask.checkout=/src/a,b=c");
        assert_eq!(id.project_filter(), format!("label=com.docker.compose.project={}", id.project()));
    }

    #[test]
    fn owners_from_labels() {
        let me = Identity::of(Path::new("/src/app"));
        let other = Identity::of(Path::new("/src/app2"));
        let container = |checkout: Option<&str>, service: Option<&str>, project: Option<&str>| Container {
            id: "d12e18096444".into(),
            name: "x".into(),
            image: "redis:7".into(),
            state: "running".into(),
            ports: String::new(),
            checkout: checkout.map(Into::into),
            service: service.map(Into::into),
            project: project.map(Into::into),
            compose_service: project.map(|_| "db".into()),
        };
        let rows = [
            (container(Some("/src/app"), Some("redis"), None), Owner::Ours("redis".into())),
            (container(Some("/src/app2"), Some("redis"), None), Owner::OtherCheckout("/src/app2".into())),
            // A prefix of our root is another checkout.
            (container(Some("/src"), Some("redis"), None), Owner::OtherCheckout("/src".into())),
            (container(None, None, Some(me.project())), Owner::OursInCompose("db".into())),
            (container(None, None, Some(other.project())), Owner::OtherCheckout(other.project().into())),
            (container(None, None, Some("shop")), Owner::Foreign),
            (container(None, None, Some("xtask-shop")), Owner::Foreign),
            (container(None, None, None), Owner::Foreign),
        ];
        for (container, want) in rows {
            assert_eq!(me.owner(&container), want, "{container:?}");
        }
    }
}
