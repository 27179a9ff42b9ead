//! Response compression on the routes that set `compress` (docs/proxying.md#compression):
//! the coding is negotiated from the request's `Accept-Encoding` (q-values, `*`, ties to the
//! route's order), the response head is adjusted as nginx's gzip filter does (`Vary`, no
//! `Content-Length`, a weakened `ETag`), and the body is encoded chunk by chunk with Pingora's
//! encoders, never held whole.

use std::io::Write;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, TRANSFER_ENCODING, VARY,
};
use http::{Method, StatusCode, Version};
use pingora_core::protocols::http::compression::{Algorithm, Encode};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::headers;
use crate::config::{Coding, CompressConfig};

/// The brotli window (as Pingora's encoder and nginx's `brotli_window` 512k use).
const BROTLI_WINDOW_BITS: u32 = 19;
/// The brotli encoder's input buffer.
const BROTLI_BUFFER: usize = 4096;

/// The encoder of one response being compressed.
pub(crate) enum Encoder {
    /// Pingora's gzip and zstd encoders.
    Pingora(Box<dyn Encode + Send + Sync>),
    /// Brotli from the brotli crate: Pingora's brotli encoder only flushes at the end and
    /// never writes the stream's last block, which decoders refuse as truncated.
    /// `None` once finished.
    Brotli(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
}

impl Encoder {
    /// Encodes one body chunk in place; at the end, flushes what the encoder held back and
    /// closes the stream.
    pub(super) fn encode(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<()> {
        let input = body.as_deref().unwrap_or_default();
        if input.is_empty() && !end {
            return Ok(());
        }
        let out: Bytes = match self {
            Encoder::Pingora(inner) => inner.encode(input, end)?,
            Encoder::Brotli(slot) => {
                let Some(writer) = slot.as_mut() else {
                    return Ok(());
                };
                writer.write_all(input).map_err(|e| {
                    Error::because(ErrorType::InternalError, "while compressing with brotli", e)
                })?;
                if end {
                    slot.take()
                        .map(|w| w.into_inner())
                        .unwrap_or_default()
                        .into()
                } else {
                    std::mem::take(writer.get_mut()).into()
                }
            }
        };
        *body = (!out.is_empty()).then_some(out);
        Ok(())
    }
}

/// Decides at the response head whether this response is compressed, and if so adjusts the
/// head and returns its encoder. Any response the route could compress gets
/// `Vary: Accept-Encoding`, also when this client accepted no coding.
pub(super) fn start(
    config: &CompressConfig,
    request: &RequestHeader,
    response: &mut ResponseHeader,
) -> Result<Option<Box<Encoder>>> {
    if !compressible(config, request, response) {
        return Ok(None);
    }
    let chosen = negotiate(&config.codings, request.headers.get(ACCEPT_ENCODING));
    let chunked = request.version == Version::HTTP_11;
    let encoder = chosen.and_then(|(coding, level)| {
        let encoder = match coding {
            Coding::Zstd => Encoder::Pingora(Algorithm::Zstd.compressor(level)?),
            Coding::Gzip => Encoder::Pingora(Algorithm::Gzip.compressor(level)?),
            Coding::Br => Encoder::Brotli(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                level,
                BROTLI_WINDOW_BITS,
            )))),
        };
        Some((coding, encoder))
    });
    headers::edit_response(response, 2, |headers| {
        add_vary(headers)?;
        if let Some((coding, _)) = &encoder {
            headers.try_insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()))?;
            headers.remove(CONTENT_LENGTH);
            headers.remove(ACCEPT_RANGES);
            if chunked {
                headers.try_insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"))?;
            }
            weaken_etag(headers);
        }
        Ok(())
    })?;
    Ok(encoder.map(|(_, encoder)| Box::new(encoder)))
}

/// Whether the route compresses this response: not for `HEAD`, a range, an informational,
/// 204, 206 or 304 status, a body already encoded, `no-transform`, an unlisted type, or a
/// known length below `min_size`.
fn compressible(
    config: &CompressConfig,
    request: &RequestHeader,
    response: &ResponseHeader,
) -> bool {
    let status = response.status;
    if request.method == Method::HEAD
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return false;
    }
    let h = &response.headers;
    if h.contains_key(CONTENT_ENCODING) || h.contains_key(CONTENT_RANGE) {
        return false;
    }
    if h.get_all(CACHE_CONTROL)
        .iter()
        .any(|v| contains_token(v.as_bytes(), b"no-transform"))
    {
        return false;
    }
    if !h
        .get(CONTENT_TYPE)
        .is_some_and(|t| config.compresses_type(t.as_bytes()))
    {
        return false;
    }
    let length = h
        .get(CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_none_or(|n| n >= config.min_size.max(1))
}

/// The coding to use: the acceptable one (q above 0, named or through `*`) with the highest
/// q-value; ties go to the earlier in the route's list. No `Accept-Encoding`, or only
/// `identity`: none.
fn negotiate(codings: &[(Coding, u32)], accept: Option<&HeaderValue>) -> Option<(Coding, u32)> {
    let accept = accept?.as_bytes();
    let mut q = [None::<u16>; 3];
    let mut any = None::<u16>;
    for item in accept.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let name = parts.next().unwrap_or_default().trim_ascii();
        let mut weight = 1000;
        for param in parts {
            let param = param.trim_ascii();
            if let Some(value) = param
                .strip_prefix(b"q=")
                .or_else(|| param.strip_prefix(b"Q="))
            {
                weight = qvalue(value.trim_ascii()).unwrap_or(0);
            }
        }
        let slot = if name == b"*" {
            &mut any
        } else if name.eq_ignore_ascii_case(b"zstd") {
            &mut q[0]
        } else if name.eq_ignore_ascii_case(b"br") {
            &mut q[1]
        } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            &mut q[2]
        } else {
            continue;
        };
        *slot = Some(weight);
    }
    let mut best: Option<((Coding, u32), u16)> = None;
    for &(coding, level) in codings {
        let index = match coding {
            Coding::Zstd => 0,
            Coding::Br => 1,
            Coding::Gzip => 2,
        };
        let weight = q[index].or(any).unwrap_or(0);
        if weight > 0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some(((coding, level), weight));
        }
    }
    best.map(|(chosen, _)| chosen)
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` when it is not one.
fn qvalue(text: &[u8]) -> Option<u16> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &[][..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + fraction.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Adds `Accept-Encoding` to `Vary`, beside the values already there (unless one is `*` or
/// names it already).
fn add_vary(headers: &mut HeaderMap) -> Result<(), http::header::MaxSizeReached> {
    let present = headers.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding"))
    });
    if !present {
        headers.try_append(VARY, HeaderValue::from_static("Accept-Encoding"))?;
    }
    Ok(())
}

/// A strong `ETag` becomes weak (`W/"…"`), as the body's bytes change; one that is not a
/// quoted tag is dropped, as nginx does.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else {
        return;
    };
    let bytes = etag.as_bytes();
    if bytes.starts_with(b"W/") {
        return;
    }
    let weak = bytes
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/", bytes].concat()).ok())
        .flatten();
    match weak {
        Some(weak) => {
            headers.insert(ETAG, weak);
        }
        None => {
            headers.remove(ETAG);
        }
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(Coding, u32); 3] = [(Coding::Zstd, 3), (Coding::Br, 6), (Coding::Gzip, 6)];

    fn pick(accept: &str) -> Option<&'static str> {
        negotiate(&ALL, Some(&HeaderValue::from_str(accept).expect("value"))).map(|c| c.0.as_str())
    }

    /// q-values choose; `q=0` refuses; `*` stands for the codings not named; equal q-values
    /// go to the route's order; `identity` alone or no header chooses none.
    #[test]
    fn negotiation_follows_q_values_then_the_route_order() {
        assert_eq!(pick("gzip"), Some("gzip"));
        assert_eq!(pick("gzip, br"), Some("br"));
        assert_eq!(pick("gzip, br, zstd"), Some("zstd"));
        assert_eq!(pick("gzip;q=0, br"), Some("br"));
        assert_eq!(pick("gzip;q=1.0, br;q=0.5"), Some("gzip"));
        assert_eq!(pick("zstd;q=0.2, gzip;q=0.9, br;q=0.900"), Some("br"));
        assert_eq!(pick("*"), Some("zstd"));
        assert_eq!(pick("*;q=0.5, zstd;q=0, br;q=0"), Some("gzip"));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("deflate, compress"), None);
        assert_eq!(pick("gzip;q=2"), None);
        assert_eq!(pick("GZIP ; Q=0.7"), Some("gzip"));
        assert_eq!(negotiate(&ALL, None), None);
        let gzip_only = [(Coding::Gzip, 6)];
        let value = HeaderValue::from_static("br, zstd");
        assert_eq!(negotiate(&gzip_only, Some(&value)), None);
    }

    #[test]
    fn q_values_are_read_in_thousandths() {
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0.05"), Some(50));
        assert_eq!(qvalue(b"1"), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"1.5"), None);
        assert_eq!(qvalue(b"0.1234"), None);
        assert_eq!(qvalue(b"x"), None);
    }

    /// `Vary` is appended beside an existing value, never twice.
    #[test]
    fn vary_is_appended_once() {
        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static("Cookie"));
        add_vary(&mut headers).expect("room");
        add_vary(&mut headers).expect("room");
        let values: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(values, ["Cookie", "Accept-Encoding"]);
    }

    #[test]
    fn strong_etags_are_weakened_and_others_kept_or_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"abc\""));
        weaken_etag(&mut headers);
        assert_eq!(headers[ETAG], "W/\"abc\"");
        weaken_etag(&mut headers);
        assert_eq!(headers[ETAG], "W/\"abc\"");
        headers.insert(ETAG, HeaderValue::from_static("abc"));
        weaken_etag(&mut headers);
        assert!(headers.get(ETAG).is_none());
    }
}
