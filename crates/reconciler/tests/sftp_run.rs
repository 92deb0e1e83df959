//! A whole reconciliation fetched from a real OpenSSH SFTP server: pinned host key,
//! import, re-delivery, new version.

mod common;

use common::{Sshd, SshdOptions};
use reconciler::config::{Settings, Source};
use reconciler::run::{Outcome, RunOptions, run};
use reconciler::sftp::BusinessDate;
use std::path::Path;

const HEADER: &str = "transaction_id,kind,type,status,direction,local_amount,local_currency,original_transaction_id,card_id,user_id,date\n";

fn settings(sshd: &Sshd, data: &Path) -> Settings {
    let mut s = Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
    s.database.data_dir = data.to_path_buf();
    s.source.staging_dir = data.join("incoming");
    s.report.dir = data.join("reports");
    s.matching.utc_offset = "Z".into();
    s.sftp.host = "127.0.0.1".into();
    s.sftp.port = sshd.port;
    s.sftp.user = sshd.user.clone();
    s.sftp.private_key = sshd.client_key.display().to_string();
    s.sftp.host_key_sha256 = sshd.fingerprint.clone();
    s.sftp.remote_dir = sshd.serve.display().to_string();
    s.sftp.attempts = 2;
    s.sftp.backoff_ms = 50;
    s
}

#[tokio::test]
async fn reconcile_from_sftp() {
    let sshd = Sshd::start(SshdOptions {
        password_auth: false,
    });
    let data = tempfile::tempdir().unwrap();
    let s = settings(&sshd, data.path());
    let store = store::Store::connect(&s.store_config()).await.unwrap();
    store.migrate().await.unwrap();
    let opts = RunOptions {
        date: BusinessDate::parse("2024-03-15").unwrap(),
        force: false,
        source: Some(Source::Sftp),
    };

    sshd.serve_file(
        "transactions_20240315.csv",
        format!("{HEADER}ctx-9,AUTHORIZATION,PURCHASE,APPROVED,DEBIT,3.00,ARS,,c,u,x\n").as_bytes(),
    );
    sshd.serve_file(
        "presentments_20240315.csv",
        b"transaction_id,direction,local_amount,local_currency\n",
    );
    sshd.serve_file("transactions_20240314.csv", HEADER.as_bytes());
    let first = run(&s, &store, &opts).await.unwrap();
    assert!(
        matches!(first, Outcome::Done { breaks: 1, .. }),
        "{first:?}"
    );
    let breaks = store.run_breaks("2024-03-15", None, 10, 0).await.unwrap();
    assert_eq!(
        (breaks[0].class.as_str(), breaks[0].transaction_id.as_str()),
        ("missing_in_ledger", "ctx-9")
    );
    assert!(
        data.path()
            .join("incoming/2024-03-15/transactions_20240315.csv")
            .exists()
    );
    assert!(
        !data
            .path()
            .join("incoming/2024-03-15/transactions_20240314.csv")
            .exists()
    );

    // Re-delivered unchanged: a no-op.
    assert_eq!(run(&s, &store, &opts).await.unwrap(), Outcome::Unchanged);
    // Re-delivered with other content: a new version, and the date's run is replaced.
    sshd.serve_file("transactions_20240315.csv", HEADER.as_bytes());
    let third = run(&s, &store, &opts).await.unwrap();
    assert!(
        matches!(third, Outcome::Done { breaks: 0, .. }),
        "{third:?}"
    );
    assert!(
        store
            .run("2024-03-15")
            .await
            .unwrap()
            .unwrap()
            .summary
            .contains("new_version")
    );

    // A server whose host key is not the pinned one: nothing is fetched or recorded.
    let mut wrong = s.clone();
    wrong.sftp.host_key_sha256 = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let other = BusinessDate::parse("2024-03-16").unwrap();
    sshd.serve_file("transactions_20240316.csv", HEADER.as_bytes());
    let err = run(
        &wrong,
        &store,
        &RunOptions {
            date: other,
            force: false,
            source: Some(Source::Sftp),
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").to_lowercase().contains("host key"),
        "{err:#}"
    );
    assert!(store.run("2024-03-16").await.unwrap().is_none());
    assert!(
        !data
            .path()
            .join("incoming/2024-03-16/transactions_20240316.csv")
            .exists()
    );
}
