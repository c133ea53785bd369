//! Accounts: names for uids (whose process holds a port) and the account a
//! service runs as when the runner is root.

use anyhow::Context;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The accounts of `/etc/passwd` (`name:x:uid:gid:...`).
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.to_owned();
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(Account { name, uid, gid })
        })
        .collect()
}

fn accounts() -> Vec<Account> {
    parse_passwd(&std::fs::read_to_string("/etc/passwd").unwrap_or_default())
}

pub fn by_name(name: &str) -> anyhow::Result<Account> {
    accounts()
        .into_iter()
        .find(|a| a.name == name)
        .with_context(|| format!("there is no account {name:?} on this machine (see /etc/passwd)"))
}

/// A name to show for a uid: the account's name, else the number.
pub fn name_of(uid: u32) -> String {
    accounts().into_iter().find(|a| a.uid == uid).map_or_else(|| uid.to_string(), |a| a.name)
}

pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_passwd_lines() {
        let text =
            "root:x:0:0:root:/root:/bin/bash\n# comment\npostgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n";
        let want =
            [Account { name: "root".into(), uid: 0, gid: 0 }, Account { name: "postgres".into(), uid: 101, gid: 104 }];
        assert_eq!(parse_passwd(text), want);
    }
}
