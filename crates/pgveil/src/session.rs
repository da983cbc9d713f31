//! One client session: startup, TLS, upstream connection, authentication
//! relay, then the message relay.
//!
//! ```text
//! client ──TCP──▶ [direct TLS?] ─▶ startup loop (SSLRequest/GSSENCRequest/
//!   CancelRequest/StartupMessage, ≤ handshake timeout)
//!   ─▶ connect upstream (TLS per upstream.tls_mode) ─▶ forward StartupMessage
//!   ─▶ relay authentication (SCRAM / md5 / cleartext), stripping -PLUS
//!   ─▶ relay ParameterStatus, mint BackendKeyData, first ReadyForQuery
//!   ─▶ two pumps: client→server and server→client, until Terminate/EOF/FATAL
//! ```
//! Protocol reference: "Message Flow" in the PostgreSQL documentation.

use crate::admin::{Protocol, StatementKind, StatementPath};
use crate::error::ProxyError;
use crate::server::Shared;
use crate::tls::{ClientStream, UpstreamStream, ALPN_POSTGRESQL};
use bytes::{Buf, Bytes, BytesMut};
use pgveil_wire::backend::{self, auth, BackendKeyData, ErrorFields};
use pgveil_wire::frontend;
use pgveil_wire::startup::{self, CancelRequest, StartupMessage, StartupPacket};
use pgveil_wire::{Frame, FrameReader, WireError};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// Output is written when input runs dry or when this much is pending,
/// whichever comes first: one write per batch of pipelined messages rather
/// than one per message.
const FLUSH_THRESHOLD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// How long a relayed cancel waits for PostgreSQL to close its end.
const CANCEL_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one client connection to completion and logs how it ended.
///
/// The connection span is entered for the handshake and for the final log
/// line only: instrumenting the relay would enter and leave it on every poll.
/// Hard stop at shutdown aborts the task (see `server.rs`).
pub async fn handle(
    shared: Arc<Shared>,
    tcp: TcpStream,
    id: u64,
    peer: String,
    span: tracing::Span,
) {
    let _ = tcp.set_nodelay(true);
    let conn = pgveil_rewrite::SessionCtx {
        connection_id: id,
        client_addr: peer,
        ..Default::default()
    };
    let result = session(&shared, tcp, conn, &span).await;
    let _enter = span.enter();
    match result {
        Ok(()) => debug!("session closed"),
        Err(e) if e.is_disconnect() => debug!(error = %e, "client disconnected"),
        Err(e) => info!(error = %e, "session ended with error"),
    }
}

/// A buffered connection end: the stream plus bytes read but not yet framed.
struct Conn<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Reads more bytes; EOF is an error here because every caller expects a
    /// complete message.
    async fn fill(&mut self) -> Result<(), ProxyError> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }

    async fn read_frame(&mut self, reader: &FrameReader) -> Result<Frame, ProxyError> {
        loop {
            if let Some(f) = reader.parse(&mut self.rbuf)? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    async fn flush(&mut self) -> Result<(), ProxyError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ProxyError> {
        self.push(bytes);
        self.flush().await
    }
}

fn tls_version<IO>(tls: &tokio_rustls::server::TlsStream<IO>) -> &'static str {
    match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    }
}

/// Sends a FATAL error for `e` if it has a client-visible form.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Conn<S>,
    e: ProxyError,
) -> Result<(), ProxyError> {
    if let Some(v2) = e.v2_client_error() {
        let _ = client.send(&v2).await;
    } else if let Some(f) = e.client_error() {
        let _ = client.send(f.raw()).await;
    }
    Err(e)
}

async fn session(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    conn: pgveil_rewrite::SessionCtx,
    span: &tracing::Span,
) -> Result<(), ProxyError> {
    use tracing::Instrument;
    let cfg = &shared.config;
    let mut client: Option<Conn<ClientStream>> = None;
    let handshake = tokio::time::timeout(
        cfg.handshake_timeout(),
        handshake(shared, tcp, conn, &mut client).instrument(span.clone()),
    )
    .await;
    let established = match handshake {
        Ok(Err(
            e @ (ProxyError::ClientProtocol(_)
            | ProxyError::UnexpectedClientMessage { .. }
            | ProxyError::DataAfterSslRequest),
        )) => {
            // Malformed or oversized startup-phase input: say why (08P01).
            return match client.as_mut() {
                Some(c) => refuse(c, e).await,
                None => Err(e),
            };
        }
        Ok(r) => r?,
        Err(_) => {
            if let Some(c) = client.as_mut() {
                let _ = refuse(c, ProxyError::HandshakeTimeout).await;
            }
            return Err(ProxyError::HandshakeTimeout);
        }
    };
    let Some(up) = established else {
        return Ok(()); // a cancel request, or the server refused the login
    };
    let client = client.expect("handshake leaves the client in place");
    relay(shared, client, up).await
}

/// What the handshake hands to the relay.
struct Upstream {
    conn: Conn<UpstreamStream>,
    rewrite: Option<pgveil_rewrite::Session>,
    _cancel: crate::cancel::CancelGuard,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _active: crate::admin::ConnectionGuard,
}

/// Startup, TLS, upstream connection and authentication. `client` is filled
/// in as soon as the connection is a [`Conn`], so the caller can still report
/// a timeout to the client.
async fn handshake(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    mut conn: pgveil_rewrite::SessionCtx,
    client_slot: &mut Option<Conn<ClientStream>>,
) -> Result<Option<Upstream>, ProxyError> {
    let cfg = &shared.config;
    // PostgreSQL 17 direct TLS: the first byte is a TLS handshake record.
    let mut first = [0u8; 1];
    let direct_tls = tcp.peek(&mut first).await? == 1 && first[0] == 0x16;
    let stream = if direct_tls {
        let Some(acceptor) = &shared.tls_acceptor else {
            return Err(ProxyError::TlsNotConfigured);
        };
        let tls = match acceptor.accept(tcp).await {
            Ok(t) => t,
            Err(e) => {
                shared.metrics.tls_handshake("unknown", false);
                return Err(ProxyError::ClientTls(e));
            }
        };
        shared.metrics.tls_handshake(tls_version(&tls), true);
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(ProxyError::DirectTlsWithoutAlpn);
        }
        ClientStream::Tls(Box::new(tls))
    } else {
        ClientStream::Plain(tcp)
    };
    let mut client = client_slot.insert(Conn::new(stream));

    let startup = loop {
        let packet = loop {
            match startup::parse_startup(&mut client.rbuf) {
                Ok(Some(p)) => break p,
                Ok(None) => client.fill().await?,
                // PostgreSQL closes silently on these (COMMERROR): a client
                // that gave up mid-connect (node-postgres writes Terminate
                // first) must not receive an error it would raise.
                Err(
                    e @ (WireError::BadLength { .. }
                    | WireError::TooLarge { .. }
                    | WireError::Malformed {
                        what: "CancelRequest",
                        ..
                    }),
                ) => return Err(ProxyError::BadStartupPacket(e)),
                Err(e) => return Err(e.into()),
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                if client.stream.is_tls() {
                    return refuse(
                        client,
                        ProxyError::UnexpectedClientMessage {
                            phase: "startup (SSLRequest after TLS)",
                        },
                    )
                    .await
                    .map(|_| None);
                }
                // Bytes pipelined behind SSLRequest were sent in the clear
                // before its answer, so may have been injected
                // (CVE-2021-23214): PostgreSQL answers and then refuses them,
                // whether it accepted TLS or not.
                let Some(acceptor) = &shared.tls_acceptor else {
                    client.send(b"N").await?;
                    if !client.rbuf.is_empty() {
                        return refuse(client, ProxyError::DataAfterSslRequest)
                            .await
                            .map(|_| None);
                    }
                    continue;
                };
                if !client.rbuf.is_empty() {
                    return refuse(client, ProxyError::DataAfterSslRequest)
                        .await
                        .map(|_| None);
                }
                client.send(b"S").await?;
                let conn = client_slot.take().expect("set above");
                let ClientStream::Plain(tcp) = conn.stream else {
                    unreachable!("checked above: not TLS yet")
                };
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        shared.metrics.tls_handshake("unknown", false);
                        return Err(ProxyError::ClientTls(e));
                    }
                };
                shared.metrics.tls_handshake(tls_version(&tls), true);
                client = client_slot.insert(Conn {
                    stream: ClientStream::Tls(Box::new(tls)),
                    rbuf: conn.rbuf,
                    wbuf: conn.wbuf,
                });
            }
            StartupPacket::GssEncRequest => client.send(b"N").await?,
            StartupPacket::Cancel(c) => {
                forward_cancel(shared, c).await;
                return Ok(None);
            }
            StartupPacket::Startup(m) => break m,
        }
    };
    let span = tracing::Span::current();
    span.record("user", startup.user().unwrap_or(""));
    span.record("database", startup.database().unwrap_or(""));
    span.record(
        "application_name",
        startup.param("application_name").unwrap_or(""),
    );
    debug!(
        user = startup.user().unwrap_or(""),
        database = startup.database().unwrap_or(""),
        tls = client.stream.tls_version().unwrap_or("none"),
        "startup"
    );

    if cfg.tls.require_tls && !client.stream.is_tls() {
        shared.metrics.refused("tls_required");
        return refuse(client, ProxyError::TlsRequired).await.map(|_| None);
    }
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        shared.metrics.refused("too_many_connections");
        return refuse(client, ProxyError::TooManyConnections)
            .await
            .map(|_| None);
    };
    let upstream = match connect_upstream(shared).await {
        Ok(u) => u,
        Err(e) => {
            shared.metrics.upstream_connect_errors.inc();
            warn!(error = %e, "upstream connection failed");
            return refuse(client, e).await.map(|_| None);
        }
    };
    let mut up = Conn::new(upstream);
    up.send(&startup.encode()).await?;
    conn.user = startup.user().unwrap_or("").to_owned();
    conn.database = startup
        .database()
        .or_else(|| startup.user())
        .unwrap_or("")
        .to_owned();
    conn.application_name = startup.param("application_name").unwrap_or("").to_owned();
    conn.tls_subject = client.stream.peer_subject();
    let Some((cancel, rewrite)) = authenticate(shared, client, &mut up, &startup, conn).await?
    else {
        return Ok(None);
    };
    Ok(Some(Upstream {
        conn: up,
        rewrite,
        _cancel: cancel,
        _permit: permit,
        _active: crate::admin::ConnectionGuard::new(&shared.metrics),
    }))
}

async fn connect_upstream(shared: &Shared) -> Result<UpstreamStream, ProxyError> {
    let cfg = &shared.config.upstream;
    let connect = async {
        let tcp = TcpStream::connect(&cfg.address)
            .await
            .map_err(|e| ProxyError::UpstreamConnect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &shared.upstream_tls else {
            return Ok(UpstreamStream::Plain(tcp));
        };
        let mut tcp = tcp;
        tcp.write_all(&startup::ssl_request()).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| ProxyError::UpstreamConnect(format!("TLS: {e}")))?;
                Ok(UpstreamStream::Tls(Box::new(tls)))
            }
            b'N' if cfg.tls_mode == crate::config::UpstreamTlsMode::Prefer => {
                Ok(UpstreamStream::Plain(tcp))
            }
            b'N' => Err(ProxyError::UpstreamConnect(
                "server does not support TLS but upstream.tls_mode requires it".into(),
            )),
            _ => Err(ProxyError::UpstreamConnect(
                "unexpected answer to SSLRequest".into(),
            )),
        }
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(cfg.connect_timeout_secs),
        connect,
    )
    .await
    .map_err(|_| ProxyError::UpstreamConnect("connect timeout".into()))?
}

/// Relays authentication until the first `ReadyForQuery`. Returns `None` when
/// the server ended the login (wrong password, unknown database, ...): its
/// FATAL error has been relayed and nothing after it is.
async fn authenticate(
    shared: &Arc<Shared>,
    client: &mut Conn<ClientStream>,
    up: &mut Conn<UpstreamStream>,
    startup: &StartupMessage,
    conn: pgveil_rewrite::SessionCtx,
) -> Result<Option<(crate::cancel::CancelGuard, Option<pgveil_rewrite::Session>)>, ProxyError> {
    let client_reader = FrameReader::new(shared.config.max_message_size);
    let server_reader = FrameReader::new(shared.config.max_message_size);
    let mut cancel = None;
    let mut params: Vec<(Bytes, Bytes)> = Vec::new();
    loop {
        let f = up.read_frame(&server_reader).await.map_err(server_side)?;
        match f.tag() {
            backend::tag::AUTHENTICATION => {
                let code = backend::auth_code(&f).map_err(ProxyError::ServerProtocol)?;
                let expects_answer = match code {
                    auth::OK | auth::SASL_FINAL => {
                        client.push(f.raw());
                        false
                    }
                    auth::SASL => {
                        // Channel binding cannot survive TLS termination: the
                        // client's TLS session is not the server's.
                        let mechs: Vec<Bytes> = backend::sasl_mechanisms(&f)
                            .map_err(ProxyError::ServerProtocol)?
                            .into_iter()
                            .filter(|m| !m.ends_with(b"-PLUS"))
                            .collect();
                        client.push(backend::sasl_request(&mechs).raw());
                        true
                    }
                    auth::CLEARTEXT | auth::MD5 | auth::SASL_CONTINUE => {
                        client.push(f.raw());
                        true
                    }
                    other => {
                        return refuse(client, ProxyError::UnsupportedAuth(other))
                            .await
                            .map(|_| None)
                    }
                };
                client.flush().await?;
                if expects_answer {
                    let answer = client.read_frame(&client_reader).await?;
                    if answer.tag() != frontend::tag::PASSWORD {
                        return refuse(
                            client,
                            ProxyError::UnexpectedClientMessage {
                                phase: "authentication",
                            },
                        )
                        .await
                        .map(|_| None);
                    }
                    up.send(answer.raw()).await?;
                }
            }
            backend::tag::BACKEND_KEY_DATA => {
                let key = BackendKeyData::decode(&f).map_err(ProxyError::ServerProtocol)?;
                let (minted, guard) = shared.cancel.register(key);
                cancel = Some(guard);
                client.push(minted.encode().raw());
            }
            backend::tag::ERROR_RESPONSE => {
                client.send(explain_auth_error(&f).raw()).await?;
                let fatal = ErrorFields::decode(&f)
                    .map(|e| e.is_fatal())
                    .unwrap_or(true);
                if fatal {
                    return Ok(None);
                }
            }
            backend::tag::READY_FOR_QUERY => {
                let rewrite = match &shared.engine {
                    Some(engine) => {
                        let database = startup.database().or_else(|| startup.user()).unwrap_or("");
                        let ctx = match load_catalog(engine, database, up, &server_reader).await {
                            Ok(ctx) => ctx,
                            Err(e) => return refuse(client, e).await.map(|_| None),
                        };
                        let mut session =
                            pgveil_rewrite::Session::new(engine.clone(), database, ctx)
                                .with_session_ctx(conn.clone());
                        if let Some(audit) = &shared.audit {
                            session = session.with_observer(audit.clone());
                        }
                        for (n, v) in &params {
                            session.parameter_status(n, v);
                        }
                        Some(session)
                    }
                    None => None,
                };
                client.send(f.raw()).await?;
                // A server that sends no BackendKeyData cannot be cancelled.
                let cancel = cancel.unwrap_or_else(|| shared.cancel.unregistered());
                return Ok(Some((cancel, rewrite)));
            }
            backend::tag::PARAMETER_STATUS => {
                if let Ok(p) = backend::decode_parameter_status(&f) {
                    params.push(p);
                }
                client.push(f.raw());
            }
            // NoticeResponse, NegotiateProtocolVersion.
            _ => client.push(f.raw()),
        }
    }
}

/// Resolves the policy's columns on the freshly authenticated session (no
/// extra credentials), or takes the database's cached resolution.
async fn load_catalog(
    engine: &Arc<pgveil_rewrite::Engine>,
    database: &str,
    up: &mut Conn<UpstreamStream>,
    reader: &FrameReader,
) -> Result<Arc<pgveil_rewrite::DbContext>, ProxyError> {
    if let Some(ctx) = engine.cached(database) {
        return Ok(ctx);
    }
    let generation = engine.generation();
    up.send(frontend::query(engine.catalog_query().as_bytes()).raw())
        .await?;
    let mut catalog = pgveil_rewrite::CatalogReader::default();
    loop {
        let f = up.read_frame(reader).await.map_err(server_side)?;
        if catalog
            .feed(&f)
            .map_err(|e| ProxyError::Catalog(e.to_string()))?
        {
            break;
        }
    }
    let rows = catalog
        .finish()
        .ok_or_else(|| ProxyError::Catalog("the catalog query failed on this database".into()))?;
    let ctx = engine.build(&rows, generation);
    engine.publish(database, &ctx);
    let missing = ctx.catalog.missing_tables();
    if engine.note_missing_tables(database, &ctx) {
        let names: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
        warn!(
            database,
            tables = %names.join(", "),
            "policy tables not found in this database: writes to their protected columns are refused until they exist"
        );
    }
    Ok(ctx)
}

/// PostgreSQL refuses SCRAM when a TLS client (which then announces channel
/// binding support, gs2 flag `y`) talks to a TLS server that offers
/// `SCRAM-SHA-256-PLUS` (a downgrade check). pgveil cannot rewrite the flag
/// without invalidating the client's proof, so it explains the fix instead.
fn explain_auth_error(f: &Frame) -> Frame {
    let Ok(mut e) = ErrorFields::decode(f) else {
        return f.clone();
    };
    let negotiation = e
        .get(backend::field::MESSAGE)
        .is_some_and(|m| m.windows(29).any(|w| w == b"channel binding negotiation e"));
    if !negotiation || e.get(backend::field::HINT).is_some() {
        return f.clone();
    }
    e.fields.push((
        backend::field::HINT,
        Bytes::from_static(
            b"pgveil terminates TLS, so SCRAM channel binding cannot reach the server. \
              Connect with channel_binding=disable, or run pgveil with upstream.tls_mode = \"disable\" \
              (e.g. over a private network or loopback).",
        ),
    ));
    e.encode(backend::tag::ERROR_RESPONSE)
}

/// Framing errors on the upstream side are the server's, not the client's.
fn server_side(e: ProxyError) -> ProxyError {
    match e {
        ProxyError::ClientProtocol(w) => ProxyError::ServerProtocol(w),
        other => other,
    }
}

/// Relays a client's cancel request to the backend it names, if the key is
/// one pgveil minted. Unknown keys are ignored silently, as PostgreSQL does.
async fn forward_cancel(shared: &Arc<Shared>, req: CancelRequest) {
    let Some(key) = shared.cancel.lookup(req.process_id, &req.secret) else {
        debug!("cancel request with unknown key ignored");
        return;
    };
    let real = CancelRequest {
        process_id: key.process_id,
        secret: key.secret,
    };
    match connect_upstream(shared).await {
        Ok(mut s) => {
            if let Err(e) = s.write_all(&real.encode()).await {
                warn!(error = %e, "forwarding cancel request failed");
                return;
            }
            // PostgreSQL closes its end once it has signalled the backend;
            // clients take the close of theirs as "cancel delivered" and go
            // on, so theirs closes only after the server's (bounded wait).
            let mut sink = [0u8; 64];
            let drained = tokio::time::timeout(CANCEL_CLOSE_WAIT, async {
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            if drained.is_err() {
                debug!("cancel request: server did not close within the wait");
            }
            debug!("cancel request forwarded");
        }
        Err(e) => warn!(error = %e, "cancel request: upstream connection failed"),
    }
}

/// Times statements from the client's message to the server's
/// `ReadyForQuery`. The client→server pump pushes one entry per message that
/// ends in `ReadyForQuery` (`Query`, `Sync`, `FunctionCall`); the
/// server→client pump pops one per `ReadyForQuery`, in order.
struct StatementClock {
    metrics: Arc<crate::admin::Metrics>,
    pending: std::sync::Mutex<std::collections::VecDeque<PendingStatement>>,
}

struct PendingStatement {
    at: std::time::Instant,
    protocol: Protocol,
    kind: StatementKind,
    path: StatementPath,
}

impl StatementClock {
    fn push(&self, p: PendingStatement) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(p);
    }

    fn ready(&self) {
        let p = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some(p) = p {
            self.metrics.observe_statement(
                p.protocol,
                p.kind,
                p.path,
                p.at.elapsed().as_secs_f64(),
            );
        }
    }
}

/// Client→server bookkeeping for statement kinds in the extended protocol.
#[derive(Default)]
struct KindTracker {
    statements: std::collections::HashMap<Bytes, StatementKind>,
    portals: std::collections::HashMap<Bytes, StatementKind>,
    batch_kind: Option<StatementKind>,
    batch_path: StatementPath,
}

/// The more notable of two paths (refused > rewritten > passthrough).
fn worse(a: StatementPath, b: StatementPath) -> StatementPath {
    let rank = |p: StatementPath| p as u8;
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The first NUL-terminated string of a message body (after the 5-byte header).
fn first_cstr(message: &[u8]) -> &[u8] {
    let body = &message[5.min(message.len())..];
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    &body[..end]
}

impl KindTracker {
    /// Notes what `message` (client→server) means for timing; returns an
    /// entry to start timing when the message ends in `ReadyForQuery`.
    fn observe(
        &mut self,
        tag: u8,
        message: &[u8],
        path: StatementPath,
    ) -> Option<PendingStatement> {
        let now = || std::time::Instant::now();
        match tag {
            frontend::tag::QUERY => Some(PendingStatement {
                at: now(),
                protocol: Protocol::Simple,
                kind: crate::admin::statement_kind(message.get(5..).unwrap_or_default()),
                path,
            }),
            frontend::tag::PARSE => {
                let name = first_cstr(message);
                let rest = &message[(5 + name.len() + 1).min(message.len())..];
                let kind = crate::admin::statement_kind(rest);
                if self.statements.len() < 10_000 || self.statements.contains_key(name) {
                    self.statements.insert(Bytes::copy_from_slice(name), kind);
                }
                self.batch_path = worse(self.batch_path, path);
                None
            }
            frontend::tag::BIND => {
                self.batch_path = worse(self.batch_path, path);
                let portal = first_cstr(message);
                let stmt_start = (5 + portal.len() + 1).min(message.len());
                let stmt_body = &message[stmt_start..];
                let stmt = &stmt_body[..stmt_body
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(stmt_body.len())];
                let kind = self
                    .statements
                    .get(stmt)
                    .copied()
                    .unwrap_or(StatementKind::Other);
                if self.portals.len() < 10_000 || self.portals.contains_key(portal) {
                    self.portals.insert(Bytes::copy_from_slice(portal), kind);
                }
                None
            }
            frontend::tag::EXECUTE => {
                let portal = first_cstr(message);
                self.batch_kind = Some(
                    self.portals
                        .get(portal)
                        .copied()
                        .unwrap_or(StatementKind::Other),
                );
                None
            }
            frontend::tag::SYNC => {
                let kind = self.batch_kind.take().unwrap_or(StatementKind::Other);
                let path = std::mem::take(&mut self.batch_path);
                Some(PendingStatement {
                    at: now(),
                    protocol: Protocol::Extended,
                    kind,
                    path,
                })
            }
            frontend::tag::FUNCTION_CALL => Some(PendingStatement {
                at: now(),
                protocol: Protocol::Extended,
                kind: StatementKind::Other,
                path: StatementPath::Passthrough,
            }),
            _ => None,
        }
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Owned halves of a plain TCP stream: no lock between the directions.
fn split_tcp(t: TcpStream) -> (BoxRead, BoxWrite) {
    let (r, w) = t.into_split();
    (Box::new(r), Box::new(w))
}

/// Halves of a TLS stream, whose state both directions share.
fn split_shared<S: AsyncRead + AsyncWrite + Send + 'static>(s: S) -> (BoxRead, BoxWrite) {
    let (r, w) = tokio::io::split(s);
    (Box::new(r), Box::new(w))
}

fn split_client(s: ClientStream) -> (BoxRead, BoxWrite) {
    match s {
        ClientStream::Plain(t) => split_tcp(t),
        tls => split_shared(tls),
    }
}

fn split_upstream(s: UpstreamStream) -> (BoxRead, BoxWrite) {
    match s {
        UpstreamStream::Plain(t) => split_tcp(t),
        tls => split_shared(tls),
    }
}

/// The rewriting session shared by both pumps, and the signal the
/// server→client side gives when a catalog refresh has been read.
struct Rewriter {
    session: std::sync::Mutex<pgveil_rewrite::Session>,
    refreshed: tokio::sync::Notify,
    metrics: Arc<crate::admin::Metrics>,
}

/// The steady state: two pumps, one per direction, until either side ends.
async fn relay(
    shared: &Arc<Shared>,
    client: Conn<ClientStream>,
    up: Upstream,
) -> Result<(), ProxyError> {
    let Upstream {
        conn: server,
        rewrite,
        _cancel,
        _permit,
        _active,
    } = up;
    let max = shared.config.max_message_size;
    let (c_read, c_write) = split_client(client.stream);
    let (s_read, s_write) = split_upstream(server.stream);
    let (mut c_write, mut s_write) = (c_write, s_write);
    let clock = shared.config.admin.enabled.then(|| {
        Arc::new(StatementClock {
            metrics: shared.metrics.clone(),
            pending: Default::default(),
        })
    });
    let rewriter = rewrite.map(|session| {
        Arc::new(Rewriter {
            session: std::sync::Mutex::new(session),
            refreshed: tokio::sync::Notify::new(),
            metrics: shared.metrics.clone(),
        })
    });
    let result = {
        // Each pump borrows the writer it needs; when the first one ends the
        // other is dropped, which releases its borrow, so a client protocol
        // error can still be reported below.
        let c2s = pump(
            c_read,
            client.rbuf,
            &mut s_write,
            PumpOptions {
                reader: FrameReader::new(max),
                dir: Direction::ClientToServer,
                bytes: shared.metrics.bytes_from_clients.clone(),
                rewriter: rewriter.clone(),
                clock: clock.clone(),
            },
        );
        let s2c = pump(
            s_read,
            server.rbuf,
            &mut c_write,
            PumpOptions {
                reader: FrameReader::new(max),
                dir: Direction::ServerToClient,
                bytes: shared.metrics.bytes_from_server.clone(),
                rewriter,
                clock: clock.clone(),
            },
        );
        tokio::select! {
            r = c2s => r,
            r = s2c => r,
        }
    };
    if let Err(e @ ProxyError::ClientProtocol(_)) = &result {
        if let Some(f) = e.client_error() {
            let _ = c_write.write_all(f.raw()).await;
            let _ = c_write.flush().await;
        }
    }
    result
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

/// True for a server `ErrorResponse` of severity FATAL or PANIC (or one too
/// malformed to tell, which ends the session just the same).
fn is_fatal_error(message: &[u8]) -> bool {
    let body = Bytes::copy_from_slice(&message[5..]);
    ErrorFields::decode_body(&body)
        .map(|e| e.is_fatal())
        .unwrap_or(true)
}

/// Logs a statement at debug level as a fingerprint: literals replaced by
/// `?`, parameters kept as `$n`, comments dropped. Never the text itself.
fn log_fingerprint(tag: u8, message: &[u8], path: StatementPath) {
    let sql = if tag == frontend::tag::QUERY {
        message.get(5..message.len().saturating_sub(1))
    } else {
        let name_len = first_cstr(message).len();
        message.get(5 + name_len + 1..).map(|rest| {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            &rest[..end]
        })
    };
    let Some(sql) = sql else { return };
    let fp = pgveil_sql::fingerprint(&String::from_utf8_lossy(sql));
    let protocol = if tag == frontend::tag::QUERY {
        "simple"
    } else {
        "extended"
    };
    let path = match path {
        StatementPath::Passthrough => "passthrough",
        StatementPath::Rewritten => "rewritten",
        StatementPath::Refused => "refused",
    };
    debug!(protocol, path, statement = %fp, "statement");
}

/// What one pump does besides moving bytes.
struct PumpOptions {
    reader: FrameReader,
    dir: Direction,
    /// Counts the bytes relayed in this direction.
    bytes: prometheus::IntCounter,
    /// Column encryption, when a policy is configured.
    rewriter: Option<Arc<Rewriter>>,
    /// Statement timing, when metrics are enabled.
    clock: Option<Arc<StatementClock>>,
}

/// What happens to one message.
enum Act {
    Forward,
    Replace,
    /// Replace, then end the session (the replacement ends in a FATAL).
    ReplaceAndClose,
    Drop,
    /// Send the catalog query, wait for the refresh, then look at the same
    /// message again.
    Refresh(Frame),
}

/// Runs one message through the rewriting session.
fn rewrite_message(
    rw: &Rewriter,
    dir: Direction,
    msg: &[u8],
    scratch: &mut Vec<u8>,
) -> (Act, StatementPath) {
    let mut s = rw.session.lock().unwrap_or_else(|e| e.into_inner());
    match dir {
        Direction::ClientToServer => {
            let o = s.client_message(msg, scratch);
            drop(s);
            let path = match o.path {
                pgveil_rewrite::Path::Passthrough => StatementPath::Passthrough,
                pgveil_rewrite::Path::Rewritten => StatementPath::Rewritten,
                pgveil_rewrite::Path::Refused(reason) => {
                    rw.metrics.refused_statement(reason);
                    StatementPath::Refused
                }
            };
            if let Some(e) = &o.error {
                // Names tables, columns and reasons only, never values.
                debug!(sqlstate = e.sqlstate(), error = %e, "statement refused");
            }
            let act = match o.action {
                pgveil_rewrite::ClientAction::Forward => Act::Forward,
                pgveil_rewrite::ClientAction::Replace => Act::Replace,
                pgveil_rewrite::ClientAction::Refresh(f) => Act::Refresh(f),
            };
            (act, path)
        }
        Direction::ServerToClient => {
            let act = match s.server_message(msg, scratch) {
                pgveil_rewrite::ServerAction::Forward => Act::Forward,
                pgveil_rewrite::ServerAction::Replace => Act::Replace,
                pgveil_rewrite::ServerAction::ReplaceAndClose => Act::ReplaceAndClose,
                pgveil_rewrite::ServerAction::Drop => Act::Drop,
                pgveil_rewrite::ServerAction::RefreshDone => {
                    rw.refreshed.notify_one();
                    Act::Drop
                }
            };
            (act, StatementPath::Passthrough)
        }
    }
}

/// Moves messages from `read` to `write` until the session ends.
///
/// Complete messages are checked in place (length caps, tag) and, unless
/// the rewriter changes them, forwarded as one contiguous run straight from
/// the read buffer: no per-message allocation or copy. A rewritten message
/// splits the run: what came before it, then its replacement, go to an
/// output buffer. Output is written when the input has no further complete
/// message (or [`FLUSH_THRESHOLD`] is reached), so a pipeline of messages
/// costs one write, and nothing waits for a `Sync` that may never come.
///
/// Client→server ends after forwarding `Terminate` or at client EOF;
/// server→client ends after relaying a FATAL error (nothing after it is
/// relayed) or at server EOF. A malformed message ends the session after the
/// complete messages before it are forwarded.
///
/// Dropping this future mid-write may leave a partial message on the wire;
/// that only happens when the session ends anyway.
async fn pump(
    mut read: BoxRead,
    mut rbuf: BytesMut,
    write: &mut BoxWrite,
    opts: PumpOptions,
) -> Result<(), ProxyError> {
    let PumpOptions {
        reader,
        dir,
        bytes,
        rewriter,
        clock,
    } = opts;
    let mut kinds = KindTracker::default();
    let mut out: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let mut off = 0;
        let mut run = 0;
        let mut end = false;
        let mut bad = None;
        let mut wait_refresh = false;
        // Whether `out` (not the read buffer) holds what to send.
        let mut rewritten = false;
        let mut more = false;
        out.clear();
        let started = clock.as_ref().map(|_| std::time::Instant::now());
        loop {
            match reader.peek(&rbuf[off..]) {
                Ok(Some((tag, total))) => {
                    let msg = &rbuf[off..off + total];
                    let (act, path) = match &rewriter {
                        Some(rw) => {
                            scratch.clear();
                            rewrite_message(rw, dir, msg, &mut scratch)
                        }
                        None => (Act::Forward, StatementPath::Passthrough),
                    };
                    if let Act::Refresh(f) = &act {
                        out.extend_from_slice(&rbuf[run..off]);
                        out.extend_from_slice(f.raw());
                        run = off;
                        wait_refresh = true;
                        rewritten = true;
                        break;
                    }
                    if dir == Direction::ClientToServer
                        && (tag == frontend::tag::QUERY || tag == frontend::tag::PARSE)
                        && tracing::enabled!(tracing::Level::DEBUG)
                    {
                        log_fingerprint(tag, msg, path);
                    }
                    if let Some(clock) = &clock {
                        match dir {
                            Direction::ClientToServer => {
                                if let Some(p) = kinds.observe(tag, msg, path) {
                                    clock.push(p);
                                }
                            }
                            Direction::ServerToClient => {
                                if tag == backend::tag::READY_FOR_QUERY && !matches!(act, Act::Drop)
                                {
                                    clock.ready();
                                }
                            }
                        }
                    }
                    end = match dir {
                        Direction::ClientToServer => tag == frontend::tag::TERMINATE,
                        Direction::ServerToClient => {
                            (tag == backend::tag::ERROR_RESPONSE && is_fatal_error(msg))
                                || matches!(act, Act::ReplaceAndClose)
                        }
                    };
                    match act {
                        Act::Forward | Act::Refresh(_) => {}
                        Act::Replace | Act::ReplaceAndClose => {
                            rewritten = true;
                            out.extend_from_slice(&rbuf[run..off]);
                            out.extend_from_slice(&scratch);
                            run = off + total;
                        }
                        Act::Drop => {
                            rewritten = true;
                            out.extend_from_slice(&rbuf[run..off]);
                            run = off + total;
                        }
                    }
                    off += total;
                    if end {
                        break;
                    }
                    if off >= FLUSH_THRESHOLD || out.len() >= FLUSH_THRESHOLD {
                        more = true; // complete messages may still be buffered
                        break;
                    }
                }
                Ok(None) => {
                    if let Some(total) = FrameReader::declared_total(&rbuf[off..]) {
                        rbuf.reserve(total.saturating_sub(rbuf.len() - off));
                    }
                    break;
                }
                Err(e) => {
                    bad = Some(match dir {
                        Direction::ClientToServer => ProxyError::ClientProtocol(e),
                        Direction::ServerToClient => ProxyError::ServerProtocol(e),
                    });
                    break;
                }
            }
        }
        if let (Some(clock), Some(started)) = (&clock, started) {
            if off > 0 || rewritten {
                clock
                    .metrics
                    .proxy_time
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        if off > 0 || rewritten {
            if !rewritten {
                write.write_all(&rbuf[..off]).await?;
            } else {
                out.extend_from_slice(&rbuf[run..off]);
                write.write_all(&out).await?;
            }
            write.flush().await?;
            bytes.inc_by(off as u64);
            rbuf.advance(off);
        }
        if scratch.capacity() > 1 << 20 {
            scratch = Vec::new();
        }
        if out.capacity() > 1 << 20 {
            out = Vec::new();
        }
        if wait_refresh {
            if let Some(rw) = &rewriter {
                rw.refreshed.notified().await;
            }
            continue;
        }
        if let Some(e) = bad {
            return Err(e);
        }
        if end {
            return Ok(());
        }
        if more {
            continue;
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(READ_CHUNK);
        }
        if read.read_buf(&mut rbuf).await? == 0 {
            return match dir {
                // A client closing without Terminate is normal enough.
                Direction::ClientToServer => Ok(()),
                Direction::ServerToClient => {
                    Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                }
            };
        }
    }
}
