//! Fixtures shared by the bench binaries in `benches/benches/`: the protocol's test vector,
//! bodies of a chosen size, and throwaway Postgres databases that are dropped afterwards.

/// The processor's demo api-secret, the one the protocol's test vectors are signed with.
pub const API_SECRET: &str = e2e::API_SECRET;

/// Timestamp and endpoint of the protocol's first test vector.
pub const VECTOR_TIMESTAMP: &str = "1700000000";
pub const VECTOR_ENDPOINT: &str = "/transactions/authorizations";

/// The protocol's documented authorization body (669 bytes, no trailing newline).
pub const VECTOR_BODY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/protocol/tests/vectors/request-body.json"
));

/// The vector body grown to exactly `len` bytes with an `extra_data` padding field, so it
/// stays a valid request body (unknown fields are tolerated).
///
/// Panics when `len` is too small to hold the vector body and the padding field.
pub fn body_of_len(len: usize) -> Vec<u8> {
    let head = VECTOR_BODY
        .strip_suffix(b"}")
        .expect("the vector body is a JSON object");
    let open = br#","extra_data":{"padding":""#;
    let close = br#""}}"#;
    let fixed = head.len() + open.len() + close.len();
    assert!(len >= fixed, "a body of {len} bytes cannot hold the vector");
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(head);
    body.extend_from_slice(open);
    body.resize(len - close.len(), b'x');
    body.extend_from_slice(close);
    body
}

/// The database timeouts (statement, lock wait, pool acquire) of the benches' stores. The
/// service's own (500 ms a statement) are a latency promise to the processor; a bench times
/// the work and must not fail its setup on a stall of a shared machine's disk.
pub const BENCH_TIMEOUT_MS: u64 = 30_000;

/// A fresh, empty Postgres database (created like the end-to-end tests create theirs, from
/// `AUTHORIZER_TEST_PG_URL`); returns its URL. Drop it with [`drop_pg_database`].
pub async fn fresh_pg_database() -> String {
    e2e::fresh_pg_database().await
}

/// Drops a database made by [`fresh_pg_database`], closing whatever still connects to it.
pub async fn drop_pg_database(url: &str) {
    use sqlx::Connection;
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    let admin = e2e::pg_admin_url();
    let dropped = async {
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        conn.close().await
    };
    if let Err(e) = dropped.await {
        // Not fatal: scripts/test drops leftover test databases before every run.
        eprintln!("could not drop bench database {name}: {e}");
    }
}
