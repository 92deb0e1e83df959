//! The processor key pair(s) and the admin token: from configuration, or generated on
//! first start and kept beside the database (mode 0600) so a newcomer needs no setup.

use crate::config::{Secret, Settings};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use protocol::{ApiSecret, KeyRing};
use std::path::{Path, PathBuf};

pub const PROCESSOR_KEY_FILE: &str = "processor-key.toml";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const INSTORE_SECRET_HASH_FILE: &str = "instore-secret-hash.key";

/// The key of the hashes under which InStore PINs and CVCs are stored: the configured one
/// (its text, or after `base64:` the bytes that base64 stands for: the form of the generated
/// file's contents), else one generated on first start and kept beside the database (mode
/// 0600). It must never change while hashes made with it exist.
pub fn instore_secret_hash_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    let configured = settings.instore.secret_hash_key.expose();
    if let Some(encoded) = configured.strip_prefix("base64:") {
        return match STANDARD.decode(encoded.trim()) {
            Ok(key) if !key.is_empty() => Ok(key),
            _ => bail!("instore.secret_hash_key: what follows base64: is not base64"),
        };
    }
    if !configured.is_empty() {
        return Ok(configured.as_bytes().to_vec());
    }
    let dir = &settings.database.data_dir;
    let path = dir.join(INSTORE_SECRET_HASH_FILE);
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_private(&path, &STANDARD.encode(random(32)?))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    STANDARD
        .decode(text.trim())
        .with_context(|| format!("{} is not base64", path.display()))
}

/// Refuses to start with an InStore hash key other than the one the database's PIN and CVC
/// hashes were made with. Once InStore is in use (a tenant configured, or a PIN or CVC
/// stored), the first instance keeps a check value of its key (a SHA-256 of a label and the
/// key), and every later start compares; before that, nothing is kept or checked, so a
/// fleet that does not use InStore never depends on the key. Without this, an instance of a
/// fleet that generated a key of its own (no `instore.secret_hash_key` configured, each with
/// its own data directory) would answer every PIN it did not store as wrong, and block cards.
pub async fn check_instore_secret_hash_key(
    store: &store::Store,
    settings: &Settings,
) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    const NAME: &str = "instore.secret_hash_key";
    let key = instore_secret_hash_key(settings)?;
    let mut h = Sha256::new();
    h.update(b"instore secret hash key check\0");
    h.update(&key);
    let check = protocol::webhook::hex(&h.finalize());
    let checking = async {
        let secrets = store.instore_secrets_kept().await?;
        let in_use = !settings.instore.tenants.is_empty() || secrets;
        let kept = match store.key_check_kept(NAME).await? {
            None if in_use => {
                if secrets {
                    tracing::warn!(
                        "PIN or CVC hashes were stored before the InStore hash key was checked: \
                         this instance's instore.secret_hash_key is now the one they are held \
                         to; if they were made with another, set that one on every instance \
                         and delete the row 'instore.secret_hash_key' of key_checks"
                    );
                }
                Some(store.key_check(NAME, &check, store::now_ms()).await?)
            }
            kept => kept,
        };
        Ok::<_, store::StoreError>(kept)
    };
    let kept = checking
        .await
        .context("cannot check instore.secret_hash_key against the database")?;
    if kept.is_some_and(|k| k != check) {
        let file = settings.database.data_dir.join(INSTORE_SECRET_HASH_FILE);
        bail!(
            "instore.secret_hash_key is not the key this database's PIN and CVC hashes were \
             made with (its check value differs){}. Set the same key on every instance: to \
             keep a generated one, instore.secret_hash_key = \"base64:<the contents of \
             instore-secret-hash.key of the instance that made the hashes>\". To start over \
             with a new key (every PIN and CVC stored before then fails), delete the row \
             '{NAME}' of the table key_checks",
            if settings.instore.secret_hash_key.expose().is_empty() {
                format!("; this instance generated its own in {}", file.display())
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Resolved credentials, and a line for each one that was generated or loaded from disk.
pub struct Credentials {
    pub keys: KeyRing,
    pub admin_token: Secret,
    /// What to tell the operator at startup (never a secret itself).
    pub notes: Vec<String>,
    /// The first api key (the one a local simulator uses).
    pub api_key: String,
    pub api_secret: ApiSecret,
}

fn random(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    api_key: String,
    api_secret: String,
}

fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(PROCESSOR_KEY_FILE)
}

fn read_key_file(path: &Path) -> anyhow::Result<(String, ApiSecret)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let k: KeyFile = settings::from_toml(&text, &format!("{} is not a key file", path.display()))?;
    let secret = ApiSecret::from_base64(k.api_secret.trim())
        .map_err(|_| anyhow::anyhow!("{}: api_secret is not base64", path.display()))?;
    Ok((k.api_key, secret))
}

/// Loads the configured credentials; when none are configured and `generate` is set,
/// creates them in the data directory (or reuses the ones created before).
pub fn resolve(settings: &Settings, generate: bool) -> anyhow::Result<Credentials> {
    let data_dir = &settings.database.data_dir;
    let mut keys = settings.key_ring()?;
    let mut notes = Vec::new();
    let (api_key, api_secret) = if keys.is_empty() {
        let path = key_file(data_dir);
        if !path.exists() {
            if !generate {
                bail!(
                    "no processor key configured and no {} yet: start `authorizer serve` once, or set \
                     AUTHORIZER__PROCESSOR__API_KEY and AUTHORIZER__PROCESSOR__API_SECRET",
                    path.display()
                );
            }
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let key = STANDARD.encode(random(32)?);
            let secret = STANDARD.encode(random(32)?);
            write_private(
                &path,
                &format!(
                    "# Processor key pair for this data directory.\napi_key = \"{key}\"\napi_secret = \"{secret}\"\n"
                ),
            )?;
            notes.push(format!(
                "generated a processor key pair: api-key {key}, secret in {} (mode 0600)",
                path.display()
            ));
        } else {
            notes.push(format!("processor key pair from {}", path.display()));
        }
        let (k, s) = read_key_file(&path)?;
        keys.insert(k.clone(), s.clone());
        (k, s)
    } else {
        let p = &settings.processor;
        let first = if p.api_key.is_empty() {
            &p.keys[0]
        } else {
            &crate::config::KeyPair {
                api_key: p.api_key.clone(),
                api_secret: p.api_secret.clone(),
            }
        };
        let s = keys
            .get(&first.api_key)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("key ring lost its first key"))?;
        (first.api_key.clone(), s)
    };
    let admin_token = if settings.admin.token.is_empty() {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        if !path.exists() {
            if !generate {
                bail!(
                    "no admin token configured and no {} yet: start `authorizer serve` once, or set AUTHORIZER__ADMIN__TOKEN",
                    path.display()
                );
            }
            std::fs::create_dir_all(data_dir)?;
            write_private(&path, &URL_SAFE_NO_PAD.encode(random(32)?))?;
            notes.push(format!(
                "generated an admin token in {} (mode 0600)",
                path.display()
            ));
        }
        let t = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Secret::new(t.trim().to_owned())
    } else {
        settings.admin.token.clone()
    };
    Ok(Credentials {
        keys,
        admin_token,
        notes,
        api_key,
        api_secret,
    })
}
