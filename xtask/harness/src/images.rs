//! The container tests' images, built here from the static busybox, never
//! pulled (no registry is reachable from our machines): by the first test
//! of a process that needs them (docker's cache makes a rebuild quick).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// busybox's httpd serving `PAGE` on port 8080: its first process ignores
/// TERM (it has no handler as PID 1), as many servers' do.
pub const HTTPD: &str = "xtask-test/httpd:1";
/// The same with a HEALTHCHECK that fetches the page.
pub const HTTPD_HEALTHY: &str = "xtask-test/httpd-health:1";
pub const PAGE: &str = "hello from a container\n";
pub const INSIDE_PORT: u16 = 8080;

/// The body of `GET /` on 127.0.0.1:`port` when it answers 200. A
/// connection alone proves nothing: docker's proxy accepts it before the
/// server inside listens, then closes it.
pub fn page(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// Whether a Docker daemon answers `docker` (from PATH).
pub fn docker_answers() -> bool {
    let version = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    version.is_ok_and(|o| o.status.success())
}

/// Builds the images the first time a test asks; panics, saying what is
/// missing, when they cannot be built.
pub fn build() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        assert!(docker_answers(), "no Docker daemon answers `docker version` (`cargo xtask test` expects one; .ci/run starts it)");
        let context = tempfile::tempdir().unwrap();
        let dir = context.path();
        let busybox = Path::new("/bin/busybox");
        let binary = std::fs::read(busybox).unwrap_or_else(|e| {
            panic!("{}: {e}: the tests' images need it: `sudo apt-get install busybox-static`", busybox.display())
        });
        assert!(is_static(&binary), "/bin/busybox is linked dynamically: `sudo apt-get install busybox-static`");
        // The applets' links are made here, so the image needs no RUN step.
        std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        std::fs::create_dir_all(dir.join("rootfs/www")).unwrap();
        std::fs::write(dir.join("rootfs/bin/busybox"), binary).unwrap();
        std::fs::set_permissions(dir.join("rootfs/bin/busybox"), PermissionsExt::from_mode(0o755)).unwrap();
        for applet in ["sh", "httpd", "wget", "sleep"] {
            symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        std::fs::write(dir.join("rootfs/www/index.html"), PAGE).unwrap();
        let httpd = format!(
            "FROM scratch\nCOPY rootfs/ /\nEXPOSE {INSIDE_PORT}\nCMD [\"/bin/httpd\", \"-f\", \"-p\", \"{INSIDE_PORT}\", \"-h\", \"/www\"]\n"
        );
        let healthy = format!(
            "FROM {HTTPD}\nHEALTHCHECK --interval=1s --timeout=1s --retries=3 \
             CMD [\"/bin/wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:{INSIDE_PORT}/\"]\n"
        );
        for (tag, dockerfile) in [(HTTPD, httpd), (HTTPD_HEALTHY, healthy)] {
            std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
            let built = Command::new("docker").args(["build", "-q", "-t", tag]).arg(dir).output().unwrap();
            let said = String::from_utf8_lossy(&built.stderr);
            assert!(built.status.success(), "building {tag}: {said}");
        }
    });
}

/// An ELF binary without an interpreter (PT_INTERP) runs in an empty image.
/// (64-bit, little-endian: the program headers' table, entry size and count
/// are at 0x20, 0x36 and 0x38.)
fn is_static(elf: &[u8]) -> bool {
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let number = |at: usize, len: usize| elf[at..at + len].iter().rev().fold(0, |n, b| n << 8 | usize::from(*b));
    let (table, size, count) = (number(0x20, 8), number(0x36, 2), number(0x38, 2));
    (0..count).all(|i| number(table + i * size, 4) != 3)
}
