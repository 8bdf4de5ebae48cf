//! Kept answers served compressed without compressing them again.
//!
//! A kept answer ([`Kept`]) holds its JSON and, once a client has asked for it, the same
//! JSON compressed with brotli or gzip. A handler answers with [`KeptJson`]; the
//! [`encode_kept`] middleware reads the request's `Accept-Encoding` and sends the form the
//! client prefers, marked with `Content-Encoding`, so the server's general compression
//! layer passes it through untouched. Every later request for the same kept answer in the
//! same encoding costs a copy of a reference, not a compression.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Answers shorter than this are sent as they are (the compression layer's own floor).
const MIN_COMPRESSED: usize = 32;
/// Brotli quality and window: near gzip's speed, smaller; each answer is compressed once.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;
const GZIP_LEVEL: u32 = 6;

/// A content coding a kept answer can be sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    /// The coding `accept_encoding` prefers among brotli and gzip, brotli on a tie, or
    /// `None` when it accepts neither (q=0, or not named and no `*`).
    pub fn preferred(accept_encoding: &str) -> Option<Encoding> {
        let mut br = None;
        let mut gzip = None;
        let mut any = None;
        for item in accept_encoding.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match name.as_str() {
                "br" => br = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
        let br = br.or(any).unwrap_or(0.0);
        let gzip = gzip.or(any).unwrap_or(0.0);
        match (br > 0.0, gzip > 0.0) {
            (true, _) if br >= gzip => Some(Encoding::Brotli),
            (_, true) => Some(Encoding::Gzip),
            _ => None,
        }
    }

    fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    fn compress(self, json: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(json.len() / 4 + 64);
        match self {
            Encoding::Brotli => {
                let mut writer = brotli::CompressorWriter::new(&mut out, 4096, BROTLI_QUALITY, BROTLI_WINDOW);
                // Writing to a Vec cannot fail.
                writer.write_all(json).ok();
                drop(writer);
            }
            Encoding::Gzip => {
                let mut writer =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(GZIP_LEVEL));
                writer.write_all(json).ok();
                writer.finish().ok();
            }
        }
        Bytes::from(out)
    }
}

/// A kept answer: its JSON, and the same compressed in each encoding asked for so far.
#[derive(Debug)]
pub struct Kept {
    json: Bytes,
    brotli: OnceLock<Bytes>,
    gzip: OnceLock<Bytes>,
}

impl Kept {
    pub fn new(json: Bytes) -> Self {
        Self {
            json,
            brotli: OnceLock::new(),
            gzip: OnceLock::new(),
        }
    }

    /// The answer's JSON.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The answer in `encoding`, compressed the first time it is asked for.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        let cell = match encoding {
            Encoding::Brotli => &self.brotli,
            Encoding::Gzip => &self.gzip,
        };
        cell.get_or_init(|| encoding.compress(&self.json))
    }
}

/// A JSON answer already serialised, sent compressed from its kept forms where the client
/// accepts it (see [`encode_kept`]).
pub struct KeptJson(pub Arc<Kept>);

impl IntoResponse for KeptJson {
    fn into_response(self) -> Response {
        let mut response =
            ([(header::CONTENT_TYPE, "application/json")], self.0.json.clone()).into_response();
        response.extensions_mut().insert(self.0);
        response
    }
}

/// Sends a [`KeptJson`] answer in the encoding the request prefers, from its kept forms.
pub async fn encode_kept(request: Request, next: Next) -> Response {
    let encoding = accepted(request.headers());
    let mut response = next.run(request).await;
    let Some(kept) = response.extensions_mut().remove::<Arc<Kept>>() else {
        return response;
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding.filter(|_| kept.json.len() >= MIN_COMPRESSED) {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        );
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(kept.encoded(encoding).clone());
    }
    response
}

fn accepted(headers: &HeaderMap) -> Option<Encoding> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Encoding::preferred(&values.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_preferred_encoding_follows_the_header() {
        use Encoding::{Brotli, Gzip};
        let cases = [
            ("gzip, deflate, br", Some(Brotli)),
            ("gzip", Some(Gzip)),
            ("br;q=0.5, gzip", Some(Gzip)),
            ("br;q=0, gzip;q=0", None),
            ("identity", None),
            ("", None),
            ("*", Some(Brotli)),
            ("*;q=0.2, gzip;q=0.8", Some(Gzip)),
            ("GZIP;Q=0.9, BR;q=0.9", Some(Brotli)),
            ("deflate", None),
        ];
        for (header, expected) in cases {
            assert_eq!(Encoding::preferred(header), expected, "{header:?}");
        }
    }

    #[test]
    fn each_form_decodes_to_the_json_and_is_made_once() {
        let json = Bytes::from(serde_json::to_vec(&vec!["pipeline"; 200]).unwrap());
        let kept = Kept::new(json.clone());
        let br = kept.encoded(Encoding::Brotli).clone();
        assert!(br.len() < json.len() / 4, "brotli {} of {}", br.len(), json.len());
        assert_eq!(
            kept.encoded(Encoding::Brotli).as_ptr(),
            br.as_ptr(),
            "compressed once"
        );
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, json);
        let gz = kept.encoded(Encoding::Gzip);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, json);
    }
}
