//! Places in JSON files (`.ports.json`, the registry, records): what is
//! wrong, said as `file:line:col`.

use std::path::Path;

/// A serde_json error as `path:line:col: message`, the place said once:
/// serde_json's message repeats it, and says column 0 before a line's first
/// character.
pub fn json_error(path: &Path, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    format!("{}:{}:{}: {message}", path.display(), e.line(), e.column().max(1))
}

/// Where `"name"` appears as a key, 1-based: its first place, or its second
/// when `again`; (1, 1) if not found.
pub fn locate_key(text: &str, name: &str, again: bool) -> (usize, usize) {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    text.match_indices(&quoted).nth(usize::from(again)).map_or((1, 1), |(offset, _)| {
        let before = &text[..offset];
        (before.matches('\n').count() + 1, offset - before.rfind('\n').map_or(0, |i| i + 1) + 1)
    })
}
