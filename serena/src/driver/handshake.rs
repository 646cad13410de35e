//! Opening a connection: protocol header, start / start-ok, tune / tune-ok, open / open-ok.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{AuthMechanism, ConnectionConfig};
use crate::error::{CloseScope, Error, Result, UnexpectedCloseError};
use crate::proto::connection::{
    Tuning, amqplain_response, client_properties, external_response, negotiate, offers_mechanism,
    plain_response, server_has_capability,
};
use crate::proto::method::connection as conn;
use crate::proto::{FRAME_MIN_SIZE, FieldTable, Frame, FrameDecoder, Method, PROTOCOL_HEADER};

/// Reads until a method frame on channel 0 arrives.
async fn read_method(
    stream: &mut (impl AsyncRead + Unpin),
    decoder: &FrameDecoder,
    buf: &mut BytesMut,
) -> Result<Method> {
    loop {
        while let Some(frame) = decoder.decode(buf)? {
            match frame {
                Frame::Method { channel: 0, method } => return Ok(method),
                Frame::Heartbeat => {}
                other => {
                    return Err(Error::UnexpectedMethod(format!(
                        "frame on channel {} during the handshake",
                        other.channel()
                    )));
                }
            }
        }
        buf.reserve(8192);
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::Io(std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the socket during the handshake",
            ))));
        }
    }
}

/// Sends one method frame; the flush pushes it out of a TLS session's buffer.
async fn send(stream: &mut (impl AsyncWrite + Unpin), method: impl Into<Method>) -> Result<()> {
    let mut out = BytesMut::new();
    crate::proto::frame::encode_method(&mut out, 0, &method.into())?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

fn close_error(c: conn::Close) -> Error {
    Error::UnexpectedClose(UnexpectedCloseError {
        scope: CloseScope::Connection,
        reply_code: c.reply_code,
        reply_text: c.reply_text.to_string(),
        class_id: c.class_id,
        method_id: c.method_id,
    })
}

fn unexpected(expected: &str, got: &Method) -> Error {
    Error::UnexpectedMethod(format!(
        "expected {expected} during the handshake, got {}",
        got.name()
    ))
}

/// Performs the handshake on a fresh stream (TCP, TLS or Unix socket). Returns the settled
/// limits, the server's properties, and any bytes read past the handshake.
pub(crate) async fn handshake(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    cfg: &ConnectionConfig,
) -> Result<(Tuning, FieldTable, BytesMut)> {
    let decoder = FrameDecoder::new(FRAME_MIN_SIZE);
    let mut buf = BytesMut::with_capacity(8192);
    stream.write_all(&PROTOCOL_HEADER).await?;
    stream.flush().await?;

    let start = match read_method(stream, &decoder, &mut buf).await? {
        Method::ConnectionStart(s) => s,
        other => return Err(unexpected("connection.start", &other)),
    };
    if !server_has_capability(&start.server_properties, "publisher_confirms") {
        return Err(Error::ConfirmsNotSupported);
    }
    let (mechanism, response) = match cfg.auth_mechanism {
        AuthMechanism::Plain => (
            "PLAIN",
            plain_response(&cfg.username, cfg.password.expose()),
        ),
        AuthMechanism::AmqPlain => (
            "AMQPLAIN",
            amqplain_response(&cfg.username, cfg.password.expose())?,
        ),
        AuthMechanism::External => ("EXTERNAL", external_response()),
    };
    if !offers_mechanism(&start.mechanisms, mechanism) {
        return Err(Error::NoCommonMechanism {
            offered: String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned(),
        });
    }
    send(
        stream,
        conn::StartOk {
            client_properties: client_properties(cfg.connection_name.as_deref()),
            mechanism: mechanism.into(),
            response,
            locale: "en_US".into(),
        },
    )
    .await?;

    let tune = match read_method(stream, &decoder, &mut buf).await? {
        Method::ConnectionTune(t) => t,
        Method::ConnectionClose(c) => return Err(close_error(c)),
        other => return Err(unexpected("connection.tune", &other)),
    };
    let client = Tuning {
        channel_max: cfg.channel_max,
        frame_max: cfg.frame_max,
        heartbeat: u16::try_from(cfg.heartbeat.as_secs()).unwrap_or(u16::MAX),
    };
    let server = Tuning {
        channel_max: tune.channel_max,
        frame_max: tune.frame_max,
        heartbeat: tune.heartbeat,
    };
    let mut tuning = negotiate(client, server);
    if tuning.frame_max != 0 {
        tuning.frame_max = tuning.frame_max.max(FRAME_MIN_SIZE);
    }
    tracing::debug!(?tuning, "negotiated");
    send(
        stream,
        conn::TuneOk {
            channel_max: tuning.channel_max,
            frame_max: tuning.frame_max,
            heartbeat: tuning.heartbeat,
        },
    )
    .await?;
    send(
        stream,
        conn::Open {
            virtual_host: cfg.virtual_host.as_str().into(),
        },
    )
    .await?;
    match read_method(stream, &decoder, &mut buf).await? {
        Method::ConnectionOpenOk(_) => {}
        Method::ConnectionClose(c) => {
            let _ = send(stream, conn::CloseOk {}).await;
            return Err(close_error(c));
        }
        other => return Err(unexpected("connection.open-ok", &other)),
    }
    Ok((tuning, start.server_properties, buf))
}
