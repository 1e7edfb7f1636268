use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::rejection::Rejection;

/// The request body the inner service receives: the bytes the verifier read and checked, in
/// the chunks they arrived in, followed by the trailers if there were any.
#[derive(Debug, Default)]
pub struct VerifiedBody {
    chunks: VecDeque<Bytes>,
    /// Boxed: few requests have trailers, and every request's future carries this body.
    trailers: Option<Box<HeaderMap>>,
    remaining: u64,
}

impl VerifiedBody {
    /// The body's chunks, as they arrived.
    pub fn chunks(&mut self) -> &[Bytes] {
        self.chunks.make_contiguous()
    }

    /// The bytes of the body not yet read from it as an [`http_body::Body`] (all of them,
    /// until the inner service reads it).
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Whether no byte of the body is left to read.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Body for VerifiedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            self.remaining -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|trailers| Ok(Frame::trailers(*trailers))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Refuses a body whose `Content-Length` passes `limit`, before a byte of it is read.
pub(crate) fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), Rejection> {
    let declared: Option<u64> = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    Ok(())
}

/// Reads `body` to its end, refusing it as soon as it passes `limit` bytes.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<VerifiedBody, Rejection>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut buffered = VerifiedBody::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::debug!(%error, "request body could not be read");
            Rejection::BodyReadFailed
        })?;
        match frame.into_data() {
            Ok(mut data) => {
                let length = data.remaining();
                let total = buffered.remaining.saturating_add(length as u64);
                if total > limit as u64 {
                    return Err(Rejection::BodyTooLarge { limit });
                }
                buffered.remaining = total;
                if length > 0 {
                    buffered.chunks.push_back(data.copy_to_bytes(length));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    buffered
                        .trailers
                        .get_or_insert_with(Default::default)
                        .extend(trailers);
                }
            }
        }
    }
    Ok(buffered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn passes_chunks_and_trailers_through() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = read_limited(StreamBody::new(futures_util::stream::iter(frames)), 100)
            .await
            .unwrap();
        assert_eq!(body.len(), 11);
        assert_eq!(body.size_hint().exact(), Some(11));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "hello world");
    }

    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        let over = read_limited(Full::new(Bytes::from(vec![0u8; 11])), 10).await;
        assert_eq!(over.unwrap_err(), Rejection::BodyTooLarge { limit: 10 });
        let at = read_limited(Full::new(Bytes::from(vec![0u8; 10])), 10).await;
        assert_eq!(at.unwrap().len(), 10);
    }
}
