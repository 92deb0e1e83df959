//! Layered, typed configuration: built-in defaults -> a file in the config directory ->
//! a per-environment file -> `PREFIX__SECTION__KEY` environment variables. Every setting
//! must exist in the defaults and keep its type, so a mistake is reported by name.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;

/// Writes a command's output to standard output. A reader that went away (`cmd | head`)
/// ends the output, not the command, which goes on to its end and exits with its own code
/// (`print!` would panic, exit 101). Any other failure (a full disk under `> file`) is said
/// once on standard error, and [`output_failed`] tells the command to exit non-zero.
pub fn print(args: fmt::Arguments<'_>) {
    use std::io::Write as _;
    match std::io::stdout().lock().write_fmt(args) {
        // Said once: the first failure is the one that matters.
        Err(e)
            if e.kind() != std::io::ErrorKind::BrokenPipe
                && !OUTPUT_FAILED.swap(true, std::sync::atomic::Ordering::SeqCst) =>
        {
            eprintln!("cannot write the output: {e}");
        }
        _ => {}
    }
}

static OUTPUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`print`] could not write some of a command's output (other than to a reader
/// that went away): the command then exits 2 where it would have exited 0.
pub fn output_failed() -> bool {
    OUTPUT_FAILED.load(std::sync::atomic::Ordering::SeqCst)
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// A setting that is missing or wrong, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Where a binary's layers come from.
pub struct Layers<'a> {
    /// The built-in defaults (TOML text, usually `include_str!` of the shipped file).
    pub built_in: &'a str,
    pub config_dir: &'a Path,
    /// The file read from `config_dir` over the defaults, e.g. `default.toml`.
    pub base_file: &'a str,
    /// Names the per-environment file: `<value>.toml`, or `<file_prefix><value>.toml`.
    pub env_name_var: &'a str,
    pub env_file_prefix: &'a str,
    /// Environment prefix, e.g. `AUTHORIZER__`.
    pub prefix: &'a str,
    /// Plain variables honoured when the prefixed one is not set, e.g. `DATABASE_URL`.
    pub aliases: &'a [(&'a str, &'a [&'a str])],
    /// Settings that may appear in files though absent from the defaults (lists of tables).
    pub open_keys: &'a [&'a str],
}

/// The authorizer's shipped defaults.
const AUTHORIZER_DEFAULTS: &str = include_str!("../../../config/default.toml");

impl<'a> Layers<'a> {
    /// The authorizer's configuration in `config_dir`: the shipped `config/default.toml`,
    /// `default.toml` and `<AUTHORIZER_ENV>.toml` there, then `AUTHORIZER__*` (and
    /// `DATABASE_URL`, `REDIS_URL`). The tools that read it (the InStore simulator) read it
    /// exactly as the authorizer does.
    pub fn authorizer(config_dir: &'a Path) -> Layers<'a> {
        Layers {
            built_in: AUTHORIZER_DEFAULTS,
            config_dir,
            base_file: "default.toml",
            env_name_var: "AUTHORIZER_ENV",
            env_file_prefix: "",
            prefix: "AUTHORIZER__",
            aliases: &[
                ("DATABASE_URL", &["database", "url"]),
                ("REDIS_URL", &["redis", "url"]),
            ],
            open_keys: &["processor.keys", "channels.keys", "instore.tenants"],
        }
    }
}

/// Loads and type-checks every layer into `T`.
pub fn load<T: DeserializeOwned>(
    l: &Layers<'_>,
    env: &[(String, String)],
) -> Result<T, ConfigError> {
    let defaults = parse_toml(l.built_in, "built-in defaults")?;
    let mut root = defaults.clone();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut files = vec![l.config_dir.join(l.base_file)];
    if let Some(e) = get(l.env_name_var).filter(|e| !e.is_empty()) {
        let f = l.config_dir.join(format!("{}{e}.toml", l.env_file_prefix));
        if !f.exists() {
            return Err(ConfigError(format!(
                "{}={e} but {} does not exist",
                l.env_name_var,
                f.display()
            )));
        }
        files.push(f);
    }
    for f in files.iter().filter(|f| f.exists()) {
        let text = std::fs::read_to_string(f)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", f.display())))?;
        merge(&mut root, parse_toml(&text, &f.display().to_string())?);
    }
    for (alias, path) in l.aliases {
        let prefixed = format!(
            "{}{}",
            l.prefix,
            path.iter()
                .map(|p| p.to_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        );
        if get(&prefixed).is_none()
            && let Some(v) = get(alias)
        {
            set_path(&mut root, path, &v)?;
        }
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(l.prefix) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        set_path(&mut root, &refs, value).map_err(|e| ConfigError(format!("{name}: {}", e.0)))?;
    }
    check_types(&defaults, &root, "", l.open_keys)?;
    root.try_into()
        .map_err(|e: toml::de::Error| ConfigError(without_values(e.message())))
}

/// Parses `text` (named `origin` in the error) as `T`. The error says what is wrong and
/// where by name, never the file's line nor a value: a key file or configuration holds
/// secrets, and the parser's own message quotes the line and the value it refused.
pub fn from_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        ConfigError(format!("{origin}: {}", without_values(e.message())))
    })
}

/// `message` without the value a type or value error quotes ("invalid type: integer `1234`,
/// expected a string" reads "invalid type: integer (value not shown), expected a string"; a
/// string is quoted `string "..."`). The names of fields and variants are kept.
fn without_values(message: &str) -> String {
    let valued = ["invalid type: ", "invalid value: ", "unknown variant "];
    if !valued.iter().any(|p| message.starts_with(p)) {
        return message.to_owned();
    }
    let (head, tail) = message
        .rsplit_once(", expected")
        .map_or((message, None), |(h, t)| (h, Some(t)));
    let mut out = match head.find(['`', '"']) {
        Some(cut) => format!("{}(value not shown)", &head[..cut]),
        None => head.to_owned(),
    };
    if let Some(t) = tail {
        out.push_str(", expected");
        out.push_str(t);
    }
    out
}

/// Whether a parameter or variable of this name carries a secret.
fn secret_name(name: &str) -> bool {
    name.to_ascii_lowercase()
        .split(['_', '-', '.'])
        .any(|part| {
            ["pass", "pwd", "secret", "token", "key"]
                .iter()
                .any(|w| part.contains(w))
                || ["auth", "sig", "signature"].contains(&part)
        })
}

/// `url` with its password and the values of query parameters that carry one (a name with
/// `pass`, `pwd`, `secret`, `token`, `key`, `auth` or `sig` in it) replaced by `***`, for
/// logs and messages. The user name is kept.
///
/// Where the user information ends cannot always be told: a password may hold `@`, `:`,
/// `/`, `?`, `#`, `=` or `&`, and a query value may hold `@`. So the rule hides rather than
/// shows: the user information ends at the last `@` whose user name (up to the first `:`)
/// holds no `/`, `?` or `#` and is no bracketed IPv6 host; failing that, at the last `@`
/// before the first `?` (all of it hidden). A URL without credentials but with a port and an
/// `@` later on (`https://h:8443/u/ops@example.com`) loses its host and port in what is
/// shown. Every `name=value` of the URL is checked for a secret, wherever it stands.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|s| s + 3) else {
        return redact_params(url);
    };
    let creds_like = |creds: &str| {
        let user = creds.split_once(':').map_or(creds, |(u, _)| u);
        !creds.starts_with('[') && !user.contains(['/', '?', '#'])
    };
    let mut at = None;
    let mut upto = url.len();
    while let Some(i) = url[start..upto].rfind('@') {
        upto = start + i;
        if creds_like(&url[start..upto]) {
            at = Some((upto, true));
            break;
        }
    }
    if at.is_none() {
        let query = url[start..].find('?').map_or(url.len(), |i| start + i);
        at = url[start..query].rfind('@').map(|i| (start + i, false));
    }
    let Some((at, named)) = at else {
        return redact_params(url);
    };
    let creds = &url[start..at];
    let shown = match creds.split_once(':') {
        Some((user, _)) if named => format!("{user}:***"),
        None if named => creds.to_owned(),
        _ => "***".to_owned(),
    };
    format!("{}{shown}{}", &url[..start], redact_params(&url[at..]))
}

/// `text` with the value of every `name=value` part (parts are separated by `?` and `&`)
/// whose name carries a secret replaced by `***`.
fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let end = rest.find(['?', '&']).unwrap_or(rest.len());
        let part = &rest[..end];
        match part.split_once('=') {
            Some((name, _)) if secret_name(name) => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(part),
        }
        if end == rest.len() {
            return out;
        }
        out.push_str(&rest[end..=end]);
        rest = &rest[end + 1..];
    }
}

/// A shell command as it may be shown: each word that holds a URL [`redact_url`]ed, and the
/// value of each `NAME=value` word whose name carries a secret (`PGPASSWORD=...`) hidden.
pub fn redact_command(command: &str) -> String {
    command
        .split(' ')
        .map(|w| match w.split_once('=') {
            Some((name, _)) if !name.contains("://") && secret_name(name) => format!("{name}=***"),
            _ if w.contains("://") => redact_url(w),
            _ => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key pair an authorizer generated in `dir` (`processor-key.toml`, as `serve` writes
/// it and the load generator and simulators read it): `(api_key, api_secret)`, trimmed.
pub fn read_key_file(dir: &Path) -> Result<(String, String), ConfigError> {
    #[derive(Deserialize)]
    struct KeyFile {
        api_key: String,
        api_secret: String,
    }
    let path = dir.join("processor-key.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    let k: KeyFile = from_toml(
        &text,
        &format!("{} is not a processor key file", path.display()),
    )?;
    Ok((k.api_key.trim().to_owned(), k.api_secret.trim().to_owned()))
}

/// Every setting must have the type of its default, so a mistake is reported with the
/// setting's name rather than as a bare type error.
fn check_types(
    default: &toml::Value,
    actual: &toml::Value,
    path: &str,
    open: &[&str],
) -> Result<(), ConfigError> {
    use toml::Value as V;
    match (default, actual) {
        (V::Table(d), V::Table(a)) => {
            for (k, v) in a {
                let name = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                // An open key (a list of tables: keys, tenants) is read by its own type, also
                // when the defaults were edited to hold one.
                if open.contains(&name.as_str()) {
                    continue;
                }
                match d.get(k) {
                    Some(dv) => check_types(dv, v, &name, open)?,
                    None => return Err(ConfigError(format!("unknown setting '{name}'"))),
                }
            }
            Ok(())
        }
        (V::Integer(_), V::Integer(i)) if *i >= 0 => Ok(()),
        (V::Integer(_), other) => Err(ConfigError(format!(
            "{path} must be a whole number (got a {})",
            other.type_str()
        ))),
        (V::Boolean(_), V::Boolean(_)) | (V::String(_), V::String(_)) => Ok(()),
        // Lists in the defaults are lists of strings.
        (V::Array(_), V::Array(items)) => match items.iter().position(|v| !v.is_str()) {
            None => Ok(()),
            Some(i) => Err(ConfigError(format!("{path}[{i}] must be a string"))),
        },
        (V::Array(_), other) => Err(ConfigError(format!(
            "{path} must be a list of strings (got a {})",
            other.type_str()
        ))),
        (V::Boolean(_), other) => Err(ConfigError(format!(
            "{path} must be true or false (got a {})",
            other.type_str()
        ))),
        (V::String(_), other) => Err(ConfigError(format!(
            "{path} must be a string (got a {})",
            other.type_str()
        ))),
        (_, _) => Err(ConfigError(format!("{path} has the wrong type"))),
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError(format!("{origin}: {}", e.message())))
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Sets the setting at `path` from the environment's text `raw`, typed as its default is: a
/// string setting takes the text as it is (`000417` stays `000417`), a list splits it at
/// commas, anything else reads it as a number or a boolean.
fn set_path(root: &mut toml::Value, path: &[&str], raw: &str) -> Result<(), ConfigError> {
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| ConfigError("empty setting name".into()))?;
    let mut cur = root;
    for p in parents {
        cur = cur
            .as_table_mut()
            .and_then(|t| t.get_mut(*p))
            .ok_or_else(|| ConfigError(format!("unknown section '{p}'")))?;
    }
    let table = cur
        .as_table_mut()
        .ok_or_else(|| ConfigError("not a section".into()))?;
    if !table.contains_key(*last) {
        return Err(ConfigError(format!("unknown setting '{last}'")));
    }
    let typed = match &table[*last] {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        // A list from the environment: comma-separated, blanks ignored.
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| toml::Value::String(p.to_owned()))
                .collect(),
        ),
        _ => scalar(raw),
    };
    table.insert((*last).to_owned(), typed);
    Ok(())
}

fn scalar(s: &str) -> toml::Value {
    if let Ok(i) = s.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match s {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(s.to_owned()),
    }
}

/// The TZif data of time zone `name` (`America/Santiago`) from the system's tz database
/// (`/usr/share/zoneinfo`, the `tzdata` package): `None` when `name` is not a plain zone
/// name (no absolute path, no `..`) or the system has no such zone. The build bundles no tz
/// database, so a change of a country's clock rules arrives with the system's package.
pub fn system_zoneinfo(name: &str) -> Option<Vec<u8>> {
    let plain = !name.is_empty()
        && !name.starts_with('/')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
    plain
        .then(|| std::fs::read(Path::new("/usr/share/zoneinfo").join(name)).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::{redact_command, redact_url};

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:data/a.db"), "sqlite:data/a.db");
        assert_eq!(
            redact_url("postgres://h/db?sslmode=require&sslpassword=s3&PASSWORD=p"),
            "postgres://h/db?sslmode=require&sslpassword=***&PASSWORD=***"
        );
        assert_eq!(
            redact_command("env DATABASE_URL=postgres://u:secret@h/db authorizer audit"),
            "env DATABASE_URL=postgres://u:***@h/db authorizer audit"
        );
        assert_eq!(
            redact_url("postgres://u:pa?ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss/x@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_command("PGPASSWORD=s3 psql --url=postgres://u:s3@h/db"),
            "PGPASSWORD=*** psql --url=postgres://u:***@h/db"
        );
        // An `@` in the query is not the end of the user information.
        assert_eq!(
            redact_url("https://h/cb?email=a@b.c&sig=S3"),
            "https://h/cb?email=a@b.c&sig=***"
        );
        // An `@` in a query value after a password: hidden up to it (the host is lost,
        // never the password).
        assert_eq!(
            redact_url("postgres://u:pw@h/db?application_name=a@b&password=x"),
            "postgres://u:***@b&password=***"
        );
        // No host (a Unix socket named in the query), a host of other characters, a host and
        // port before a query holding `@`: the password hidden, the rest kept.
        assert_eq!(
            redact_url("postgres://u:pw@/db?host=/var/run/postgresql"),
            "postgres://u:***@/db?host=/var/run/postgresql"
        );
        assert_eq!(
            redact_url("https://u:pw@bücher.example/"),
            "https://u:***@bücher.example/"
        );
        assert_eq!(
            redact_url("https://h:8443/cb?email=a@b.c&sig=S3"),
            "https://h:***@b.c&sig=***"
        );
        // What the reviews found shown in clear, hidden: a password before a host of other
        // characters, a user name holding `@`, a secret after an `@` in the query, and a
        // user name holding `/`.
        for (url, shown) in [
            (
                "postgres://app:2024#Spring@bücher.example/app",
                "postgres://app:***@bücher.example/app",
            ),
            (
                "postgres://app:2024#Spring@$(DB_HOST):5432/app",
                "postgres://app:***@$(DB_HOST):5432/app",
            ),
            (
                "postgres://myadmin@srv:2024#Spring@srv.postgres.database.azure.com/app",
                "postgres://myadmin@srv:***@srv.postgres.database.azure.com/app",
            ),
            (
                "https://ci.example:8443/hook?repo=git@github.com:org/repo.git&token=ghp_X",
                "https://ci.example:***@github.com:org/repo.git&token=***",
            ),
            (
                "https://u:pw@h/cb?next=https://x@y/z&api_key=K",
                "https://u:***@y/z&api_key=***",
            ),
            ("postgres://do/main:pw@h/db", "postgres://***@h/db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(
            redact_url("postgres://[::1]:5432/db?application_name=ops@corp"),
            "postgres://[::1]:5432/db?application_name=ops@corp"
        );
        // A password that reads as a port and a path is hidden all the same.
        for (url, shown) in [
            ("postgres://u:1234/x@h/db", "postgres://u:***@h/db"),
            ("postgres://u:12/x=y@h/db", "postgres://u:***@h/db"),
            (
                "postgres://app:2024#Spring=@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        // `=` and `&` in a password; `@` in a query value after a password.
        assert_eq!(
            redact_url("postgres://u:abc=@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:a&b=c@h:5432,h2:5433/db?sslmode=require"),
            "postgres://u:***@h:5432,h2:5433/db?sslmode=require"
        );
        assert_eq!(
            redact_url("https://h/cb?token=t0k&email=a@b.c"),
            "https://h/cb?token=***&email=a@b.c"
        );
        assert_eq!(
            redact_command("AUTHORIZER__DATABASE__URL=postgres://u:pw@h/db authorizer audit"),
            "AUTHORIZER__DATABASE__URL=postgres://u:***@h/db authorizer audit"
        );
    }

    #[test]
    fn a_string_setting_keeps_the_text_of_the_environment() {
        let defaults = "[processor]\napi_key = \"\"\nport = 1\npeers = []\n";
        let layers = Layers {
            built_in: defaults,
            config_dir: Path::new("/nonexistent"),
            base_file: "default.toml",
            env_name_var: "APP_ENV",
            env_file_prefix: "",
            prefix: "APP__",
            aliases: &[],
            open_keys: &[],
        };
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let v: toml::Value = load(&layers, &env("APP__PROCESSOR__API_KEY", "000417")).unwrap();
        assert_eq!(v["processor"]["api_key"].as_str(), Some("000417"));
        let v: toml::Value = load(&layers, &env("APP__PROCESSOR__API_KEY", "+1")).unwrap();
        assert_eq!(v["processor"]["api_key"].as_str(), Some("+1"));
        let v: toml::Value = load(&layers, &env("APP__PROCESSOR__PORT", "0042")).unwrap();
        assert_eq!(v["processor"]["port"].as_integer(), Some(42));
        let v: toml::Value = load(&layers, &env("APP__PROCESSOR__PEERS", "a, 007")).unwrap();
        assert_eq!(v["processor"]["peers"], toml::Value::from(vec!["a", "007"]));
    }

    #[test]
    fn only_the_value_of_a_type_error_is_hidden() {
        use super::without_values;
        assert_eq!(
            without_values("invalid type: integer `1234`, expected a string"),
            "invalid type: integer (value not shown), expected a string"
        );
        assert_eq!(
            without_values("invalid type: string \"https://u:s3@h/\", expected a sequence"),
            "invalid type: string (value not shown), expected a sequence"
        );
        assert_eq!(
            without_values("invalid type: string \"a, expected b\", expected a sequence"),
            "invalid type: string (value not shown), expected a sequence"
        );
        let no_value = "invalid type: sequence, expected a string";
        assert_eq!(without_values(no_value), no_value);
        for kept in [
            "missing field `tenant_id`",
            "unknown field `callback_url_prefix`",
        ] {
            assert_eq!(without_values(kept), kept);
        }
    }

    #[test]
    fn a_parse_error_shows_no_line_nor_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct K {
            api_secret: String,
        }
        for text in [
            "api_secret = 1234567890123456",
            "api_secret = \"c2VjcmV0\" extra",
            "api-secret = \"c2VjcmV0\"",
        ] {
            let e = super::from_toml::<K>(text, "key file")
                .unwrap_err()
                .to_string();
            assert!(e.contains("key file: "), "{e}");
            for secret in ["1234567890123456", "c2VjcmV0"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    use super::*;

    fn toml(text: &str) -> toml::Value {
        parse_toml(text, "test").unwrap()
    }

    #[test]
    fn open_lists_of_tables_pass_also_when_the_defaults_hold_one() {
        let open = &["instore.tenants"];
        let tenant = "[[instore.tenants]]\ntenant_id = \"t1\"\nmerchant_id = \"m\"\n";
        let defaults = toml(&format!("[instore]\nbase_path = \"/instore\"\n{tenant}"));
        let actual = toml(&format!("[instore]\nbase_path = \"/x\"\n{tenant}"));
        assert!(check_types(&defaults, &actual, "", open).is_ok());
        let plain = toml("[instore]\nbase_path = \"/instore\"\n");
        assert!(check_types(&plain, &actual, "", open).is_ok());
        // The other settings are still held to their defaults' types and names.
        let wrong = toml("[instore]\nbase_path = 1\n");
        let e = check_types(&defaults, &wrong, "", open).unwrap_err();
        assert_eq!(e.0, "instore.base_path must be a string (got a integer)");
        let unknown = toml("[instore]\nbase_pth = \"/x\"\n");
        let e = check_types(&defaults, &unknown, "", open).unwrap_err();
        assert_eq!(e.0, "unknown setting 'instore.base_pth'");
    }
}
