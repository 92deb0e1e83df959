//! Where the simulator finds the authorizer and the tenant it speaks as: the authorizer's
//! own configuration (the same layers `authorizer serve` reads: `config/default.toml`, the
//! `AUTHORIZER_ENV` file, `AUTHORIZER__...` variables), overridden by flags.

use anyhow::{Context as _, bail};
use instore::TenantConfig;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The part of the authorizer's configuration the simulator reads.
#[derive(Debug, Deserialize)]
struct AuthorizerSettings {
    server: Server,
    instore: Instore,
    admin: AdminSection,
    database: Database,
}

#[derive(Debug, Deserialize)]
struct AdminSection {
    #[serde(default)]
    token: String,
}

#[derive(Debug, Deserialize)]
struct Database {
    data_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Server {
    listen: String,
}

#[derive(Debug, Deserialize)]
struct Instore {
    base_path: String,
    #[serde(default)]
    tenants: Vec<TenantConfig>,
}

/// What the authorizer's configuration says about InStore.
#[derive(Debug)]
pub struct Configured {
    /// `http://<server.listen><instore.base_path>`.
    pub url: String,
    pub tenants: Vec<TenantConfig>,
    /// `http://<server.listen>`: the admin API.
    pub admin_url: String,
    /// `admin.token`, else what `authorizer serve` generated in `data_dir/admin-token`.
    pub admin_token: Option<String>,
}

/// Reads the authorizer's configuration from `config_dir` and the environment.
pub fn read(config_dir: &Path, env: &[(String, String)]) -> anyhow::Result<Configured> {
    let s: AuthorizerSettings = settings::load(&settings::Layers::authorizer(config_dir), env)
        .map_err(|e| anyhow::anyhow!("{}: {}", config_dir.display(), e.0))?;
    let admin_token = if s.admin.token.is_empty() {
        std::fs::read_to_string(s.database.data_dir.join("admin-token"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    } else {
        Some(s.admin.token)
    };
    Ok(Configured {
        url: format!(
            "http://{}{}",
            s.server.listen,
            s.instore.base_path.trim_end_matches('/')
        ),
        tenants: s.instore.tenants,
        admin_url: format!("http://{}", s.server.listen),
        admin_token,
    })
}

/// The admin API the flags or the configuration name; `None` without a token.
pub fn admin(configured: &Configured, o: &Overrides) -> Option<crate::sim::Admin> {
    let token = o
        .admin_token
        .clone()
        .or_else(|| configured.admin_token.clone())?;
    Some(crate::sim::Admin {
        url: o
            .admin_url
            .clone()
            .unwrap_or_else(|| configured.admin_url.clone()),
        token,
    })
}

/// The tenant the simulator acts as, with its key.
#[derive(Clone)]
pub struct Target {
    /// The authorizer's InStore base URL, e.g. `http://127.0.0.1:8080/instore`.
    pub url: String,
    pub tenant_id: String,
    /// The verification key: the HMAC key, its UTF-8 bytes as written.
    pub key: Vec<u8>,
    pub api_key: Option<String>,
    /// Where callbacks are sent: a loopback URL prefix the tenant allows, ending in `/`.
    pub callback_prefix: String,
    pub location_id: String,
    pub workstation_id: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("tenant_id", &self.tenant_id)
            .field("callback_prefix", &self.callback_prefix)
            .finish_non_exhaustive()
    }
}

/// Flags that override the configuration.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub url: Option<String>,
    pub tenant_id: Option<String>,
    pub key: Option<String>,
    pub api_key: Option<String>,
    pub callback_prefix: Option<String>,
    pub admin_url: Option<String>,
    pub admin_token: Option<String>,
}

/// Picks the tenant (the one named, else the only one configured) and where its callbacks
/// go (the flag, else the first loopback `http` prefix of its allow-list).
pub fn target(
    configured: &Configured,
    o: &Overrides,
    location_id: &str,
    workstation_id: &str,
) -> anyhow::Result<Target> {
    let tenant = match &o.tenant_id {
        Some(id) => configured.tenants.iter().find(|t| &t.tenant_id == id),
        None if configured.tenants.len() == 1 => configured.tenants.first(),
        None if o.key.is_some() => None,
        None if configured.tenants.is_empty() => {
            bail!("no [[instore.tenants]] configured: add one, or give --tenant and --key")
        }
        None => bail!(
            "several InStore tenants are configured ({}): name one with --tenant",
            configured
                .tenants
                .iter()
                .map(|t| t.tenant_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let tenant_id = o
        .tenant_id
        .clone()
        .or_else(|| tenant.map(|t| t.tenant_id.clone()))
        .context("--tenant is required when the configuration has no tenant")?;
    let key = match (&o.key, tenant) {
        (Some(k), _) => k.clone(),
        (None, Some(t)) => t.verification_key.expose().to_owned(),
        (None, None) => bail!("tenant {tenant_id} is not configured: give its --key"),
    };
    let api_key = o
        .api_key
        .clone()
        .or_else(|| tenant.and_then(|t| t.api_key.as_ref().map(|k| k.expose().to_owned())));
    let callback_prefix = match &o.callback_prefix {
        Some(p) => p.clone(),
        None => tenant
            .and_then(|t| {
                t.callback_url_prefixes
                    .iter()
                    .find(|p| loopback_addr(p).is_some())
            })
            .cloned()
            .with_context(|| {
                format!(
                    "tenant {tenant_id} allows no loopback callback URL: add e.g. \
                     \"http://127.0.0.1:8099/\" to its callback_url_prefixes, or give --callback-url"
                )
            })?,
    };
    let callback_prefix = if callback_prefix.ends_with('/') {
        callback_prefix
    } else {
        format!("{callback_prefix}/")
    };
    if loopback_addr(&callback_prefix).is_none() {
        bail!("the callback URL {callback_prefix} is not http on a loopback address with a port");
    }
    Ok(Target {
        url: o
            .url
            .clone()
            .unwrap_or_else(|| configured.url.clone())
            .trim_end_matches('/')
            .to_owned(),
        tenant_id,
        key: key.into_bytes(),
        api_key,
        callback_prefix,
        location_id: location_id.to_owned(),
        workstation_id: workstation_id.to_owned(),
    })
}

/// The loopback address of an `http://<ip or localhost>:<port>/...` URL: where the
/// simulator listens for its callbacks.
pub fn loopback_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h.parse().ok()?,
    };
    ip.is_loopback().then_some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, prefixes: &[&str]) -> TenantConfig {
        serde_json::from_value(serde_json::json!({
            "tenant_id": id,
            "verification_key": format!("{id}-key-0123456789abcdef"),
            "callback_url_prefixes": prefixes,
        }))
        .unwrap()
    }

    #[test]
    fn loopback_only() {
        assert_eq!(
            loopback_addr("http://127.0.0.1:8099/"),
            Some("127.0.0.1:8099".parse().unwrap())
        );
        assert_eq!(
            loopback_addr("http://localhost:8099/cb/"),
            Some("127.0.0.1:8099".parse().unwrap())
        );
        assert_eq!(
            loopback_addr("http://[::1]:8099/"),
            Some("[::1]:8099".parse().unwrap())
        );
        for bad in [
            "https://127.0.0.1:8099/",
            "http://10.0.0.1:8099/",
            "http://127.0.0.1/",
            "http://instore.example:80/",
        ] {
            assert_eq!(loopback_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn picks_the_tenant_and_its_loopback_prefix() {
        let c = Configured {
            url: "http://127.0.0.1:8080/instore".into(),
            tenants: vec![tenant(
                "t1",
                &["https://instore.example/", "http://127.0.0.1:8099"],
            )],
            admin_url: "http://127.0.0.1:8080".into(),
            admin_token: None,
        };
        let t = target(&c, &Overrides::default(), "L", "W").unwrap();
        assert_eq!(t.tenant_id, "t1");
        assert_eq!(t.key, b"t1-key-0123456789abcdef");
        assert_eq!(t.callback_prefix, "http://127.0.0.1:8099/");

        let c2 = Configured {
            url: c.url.clone(),
            tenants: vec![
                tenant("t1", &["http://127.0.0.1:8099/"]),
                tenant("t2", &["https://instore.example/"]),
            ],
            admin_url: c.admin_url.clone(),
            admin_token: Some("configured-token".into()),
        };
        let err = target(&c2, &Overrides::default(), "L", "W").unwrap_err();
        assert!(err.to_string().contains("t1, t2"), "{err}");
        let err = target(
            &c2,
            &Overrides {
                tenant_id: Some("t2".into()),
                ..Overrides::default()
            },
            "L",
            "W",
        )
        .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let t = target(
            &c2,
            &Overrides {
                tenant_id: Some("t2".into()),
                callback_prefix: Some("http://127.0.0.1:9000/x".into()),
                ..Overrides::default()
            },
            "L",
            "W",
        )
        .unwrap();
        assert_eq!(t.callback_prefix, "http://127.0.0.1:9000/x/");
        assert_eq!(t.key, b"t2-key-0123456789abcdef");

        // The admin API: no token, none; the configured one; the flags' over it.
        assert!(admin(&c, &Overrides::default()).is_none());
        let a = admin(&c2, &Overrides::default()).expect("configured token");
        assert_eq!(
            (a.url.as_str(), a.token.as_str()),
            ("http://127.0.0.1:8080", "configured-token")
        );
        let a = admin(
            &c2,
            &Overrides {
                admin_url: Some("http://127.0.0.1:9001".into()),
                admin_token: Some("flag-token".into()),
                ..Overrides::default()
            },
        )
        .expect("flag token");
        assert_eq!(
            (a.url.as_str(), a.token.as_str()),
            ("http://127.0.0.1:9001", "flag-token")
        );
    }
}
