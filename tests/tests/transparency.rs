//! Issue 2, acceptance 3: the same workload through pgveil (TLS) and direct
//! gives identical results: simple and prepared queries, a pipelined batch,
//! COPY in both directions (100k rows), LISTEN/NOTIFY.

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use pgveil_tests::*;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

fn simple_rows(msgs: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Runs the workload on `client` (database prepared by the caller) and
/// returns everything it observed, as text.
async fn workload(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    let mut seen = Vec::new();
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text, amount numeric, at timestamptz, tags text[]);
             INSERT INTO {table} SELECT g, 'name ' || g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour', ARRAY['a', g::text] FROM generate_series(1, 500) g;"
        ))
        .await
        .unwrap();
    // Simple protocol, several statements in one string.
    let r = client
        .simple_query(&format!(
            "SELECT count(*), sum(amount) FROM {table}; SELECT id, name, tags FROM {table} WHERE id <= 3 ORDER BY id; SELECT NULL::text, ''::text"
        ))
        .await
        .unwrap();
    seen.push(format!("{:?}", simple_rows(r)));
    // Prepared statement, binary results, reused.
    let stmt = client
        .prepare(&format!(
            "SELECT id, name, amount::text, at, tags FROM {table} WHERE id = $1 OR name = $2"
        ))
        .await
        .unwrap();
    for i in [1i32, 250, 499] {
        let rows = client
            .query(&stmt, &[&i, &format!("name {}", i + 1)])
            .await
            .unwrap();
        for row in rows {
            let at: std::time::SystemTime = row.get(3);
            seen.push(format!(
                "{:?} {:?} {:?} {:?} {:?}",
                row.get::<_, i32>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                at,
                row.get::<_, Vec<String>>(4)
            ));
        }
    }
    // Errors keep the session usable.
    let e = client.simple_query("SELECT 1/0").await.unwrap_err();
    seen.push(format!("{:?}", e.code()));
    // A pipelined batch: 100 queries in flight before their results are read.
    let futs = (0..100i32).map(|i| {
        let q = format!("SELECT $1::int * 2, (SELECT name FROM {table} WHERE id = $1::int + 1)");
        async move {
            client
                .query_one(&q, &[&i])
                .await
                .map(|r| (r.get::<_, i32>(0), r.get::<_, Option<String>>(1)))
        }
    });
    let results = futures_util::future::join_all(futs).await;
    for r in results {
        seen.push(format!("{:?}", r.unwrap()));
    }
    // COPY FROM STDIN, 100k rows.
    let copy_table = format!("{table}_copy");
    client
        .batch_execute(&format!("CREATE TABLE {copy_table} (id int, payload text)"))
        .await
        .unwrap();
    let sink = client
        .copy_in(&format!("COPY {copy_table} FROM STDIN"))
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..100_000 {
        chunk.push_str(&format!("{i}\tpayload-{i}-\\t-ü\n"));
        if chunk.len() > 60_000 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(bytes::Bytes::from(chunk)).await.unwrap();
    let n = sink.finish().await.unwrap();
    seen.push(format!("copied in {n}"));
    // COPY TO STDOUT: hash the whole stream.
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT * FROM {copy_table} ORDER BY id) TO STDOUT"
        ))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let all: Vec<u8> = chunks.concat();
    seen.push(format!(
        "copied out {} bytes, {} lines",
        all.len(),
        all.iter().filter(|&&b| b == b'\n').count()
    ));
    seen.push(format!("fingerprint {:x}", fnv(&all)));
    seen
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_results_direct_and_through_pgveil() {
    let db_direct = fresh_database("transp_direct");
    let db_proxy = fresh_database("transp_proxy");
    let proxy = Proxy::start().await;
    let direct = connect_plain(&direct_config(&db_direct)).await;
    let via = connect_tls(&proxy.pg_config(&db_proxy)).await;
    let a = workload(&direct, "t").await;
    let b = workload(&via, "t").await;
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    assert!(a.iter().any(|s| s == "copied in 100000"));
}

/// Connects and forwards asynchronous messages (notifications) to a channel.
async fn connect_with_notifications(
    config: &tokio_postgres::Config,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let mut config = config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls());
    let (client, mut conn) = config.connect(tls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_through_pgveil() {
    let proxy = Proxy::start().await;
    let (listener, mut rx) = connect_with_notifications(&proxy.pg_config("postgres")).await;
    listener
        .batch_execute("LISTEN pgveil_events")
        .await
        .unwrap();
    let sender = connect_tls(&proxy.pg_config("postgres")).await;
    for i in 0..3 {
        sender
            .batch_execute(&format!("NOTIFY pgveil_events, 'hello {i}'"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let (ch, payload) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("notification in time")
            .unwrap();
        assert_eq!(ch, "pgveil_events");
        assert_eq!(payload, format!("hello {i}"));
    }
    // Notices (NoticeResponse) and ParameterStatus also pass.
    listener
        .batch_execute("SET application_name = 'pgveil-test'")
        .await
        .unwrap();
    let r = listener
        .query_one("SHOW application_name", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "pgveil-test");
}
