use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::rejection::Rejection;

/// The request body the inner service receives: the bytes the verifier read and checked, in
/// the chunks they arrived in (but for runs of small ones, under 8 KiB, copied together),
/// followed by the trailers if there were any.
#[derive(Debug, Default)]
pub struct VerifiedBody {
    chunks: VecDeque<Bytes>,
    /// Boxed: few requests have trailers, and every request's future carries this body.
    trailers: Option<Box<HeaderMap>>,
    remaining: u64,
}

impl VerifiedBody {
    /// The body's chunks: as they arrived, but for runs of small ones copied together.
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

/// Chunks under this many bytes are copied together rather than kept as they came (but for a
/// body's last one, when it is alone): a body sent a byte at a chunk would otherwise hold a
/// `Bytes` (32 bytes), and maybe a share of the connection's read buffer, for every byte
/// (64 MiB for a 2 MiB body).
const SMALL_CHUNK: usize = 8 * 1024;
/// How many bytes of small chunks are copied together into one.
const GATHERED_CHUNK: usize = 64 * 1024;

/// Reads `body` to its end, refusing it as soon as it passes `limit` bytes.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<VerifiedBody, Rejection>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut buffered = VerifiedBody::default();
    let mut small = SmallChunks::default();
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
                if length >= SMALL_CHUNK {
                    small.end_run(&mut buffered);
                    buffered.chunks.push_back(data.copy_to_bytes(length));
                } else if length > 0 {
                    small.push(data, &mut buffered);
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
    small.end_body(&mut buffered);
    Ok(buffered)
}

/// A run of small chunks on their way into a [`VerifiedBody`], copied together; its first
/// chunk is kept as it came until a second one follows or a large one ends the run, so that a
/// small body in one chunk (the usual case) is not copied at all.
#[derive(Default)]
struct SmallChunks {
    first: Option<Bytes>,
    gathered: BytesMut,
}

impl SmallChunks {
    fn push(&mut self, mut data: impl Buf, body: &mut VerifiedBody) {
        if self.first.is_none() && self.gathered.is_empty() {
            self.first = Some(data.copy_to_bytes(data.remaining()));
            return;
        }
        let first = self.first.take();
        let adding = first.as_ref().map_or(0, Bytes::len) + data.remaining();
        let run = self.gathered.len() + adding;
        if run > self.gathered.capacity() {
            // A short run grows as a Vec does (doubling), with room for the kept first chunk
            // and this one reserved together, so that its first merge allocates once. One that
            // passes SMALL_CHUNK gets room for a whole gathered chunk at once (it is handed over once it passes GATHERED_CHUNK, and
            // each small chunk is under SMALL_CHUNK), so that it is not copied again as it grows.
            let room = if run < SMALL_CHUNK {
                adding
            } else {
                GATHERED_CHUNK + SMALL_CHUNK - self.gathered.len()
            };
            self.gathered.reserve(room);
        }
        if let Some(first) = first {
            self.gathered.extend_from_slice(&first);
        }
        self.gathered.put(data);
        if self.gathered.len() >= GATHERED_CHUNK {
            self.hand_over(body);
        }
    }

    /// A large chunk ends the run: its bytes go into `body` as one copy, so that no small
    /// chunk between large ones keeps a share of the connection's read buffer.
    fn end_run(&mut self, body: &mut VerifiedBody) {
        // Nothing is gathered while the first chunk is kept.
        if let Some(first) = self.first.take() {
            body.chunks.push_back(Bytes::copy_from_slice(&first));
        } else if !self.gathered.is_empty() {
            self.hand_over(body);
        }
    }

    /// The body ended: a small chunk alone at its end goes into `body` as it came.
    fn end_body(&mut self, body: &mut VerifiedBody) {
        match self.first.take() {
            Some(first) => body.chunks.push_back(first),
            None => self.end_run(body),
        }
    }

    /// The gathered run goes into `body`: as it is while under an eighth of its room is unused,
    /// else copied out at its size, so that no chunk holds much more memory than its bytes.
    fn hand_over(&mut self, body: &mut VerifiedBody) {
        let run = std::mem::take(&mut self.gathered);
        let unused = run.capacity() - run.len();
        body.chunks.push_back(if unused <= run.capacity() / 8 {
            run.freeze()
        } else {
            Bytes::copy_from_slice(&run)
        });
    }
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
    async fn a_small_body_in_one_chunk_is_not_copied() {
        static BODY: &[u8] = b"{\"amount\": 1}";
        let mut body = read_limited(Full::new(Bytes::from_static(BODY)), 1 << 20)
            .await
            .unwrap();
        assert_eq!(body.chunks().len(), 1);
        assert_eq!(body.chunks()[0].as_ptr(), BODY.as_ptr());
    }

    #[tokio::test]
    async fn small_chunks_between_large_ones_are_copied_in_order() {
        let large = || Bytes::from(vec![7u8; SMALL_CHUNK]);
        let parts = [
            Bytes::from_static(b"a"),
            Bytes::new(),
            large(),
            Bytes::from_static(b"b"),
            Bytes::new(),
            Bytes::from_static(b"c"),
            large(),
            Bytes::new(),
            large(),
            Bytes::from_static(b"d"),
        ];
        let expected: Vec<u8> = parts.iter().flat_map(|part| part.to_vec()).collect();
        let frames = parts
            .iter()
            .cloned()
            .map(|part| Ok::<_, Infallible>(Frame::data(part)));
        let mut body = read_limited(StreamBody::new(futures_util::stream::iter(frames)), 1 << 20)
            .await
            .unwrap();
        let chunks: Vec<Bytes> = body.chunks().to_vec();
        // "a", a large one, "bc", two large ones, "d": no empty chunk is kept.
        assert_eq!(
            chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            [1, SMALL_CHUNK, 2, SMALL_CHUNK, SMALL_CHUNK, 1]
        );
        // A small chunk before a large one is a copy; the body's last, alone, is not.
        assert_ne!(chunks[0].as_ptr(), parts[0].as_ptr());
        assert_eq!(chunks[5].as_ptr(), parts[9].as_ptr());
        assert_eq!(body.collect().await.unwrap().to_bytes(), expected);
    }

    #[tokio::test]
    async fn small_chunks_are_gathered_in_order() {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..100_000u32)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i as u8]))))
            .collect();
        frames.push(Ok(Frame::data(Bytes::from(vec![7u8; SMALL_CHUNK]))));
        frames.push(Ok(Frame::data(Bytes::from_static(b"end"))));
        let expected: Vec<u8> = (0..100_000u32)
            .map(|i| i as u8)
            .chain(std::iter::repeat(7).take(SMALL_CHUNK))
            .chain(*b"end")
            .collect();
        let mut body = read_limited(StreamBody::new(futures_util::stream::iter(frames)), 1 << 20)
            .await
            .unwrap();
        // 100,000 bytes in two gathered chunks, the large one as it came, then the tail.
        assert_eq!(body.chunks().len(), 4);
        let chunks = assert_holds_little_unused_room(body).await;
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test]
    async fn a_short_run_is_handed_over_at_its_size() {
        let frames =
            [b"ab", b"cd"].map(|part| Ok::<_, Infallible>(Frame::data(Bytes::from_static(part))));
        let body = read_limited(StreamBody::new(futures_util::stream::iter(frames)), 1 << 20)
            .await
            .unwrap();
        let chunks = assert_holds_little_unused_room(body).await;
        assert_eq!(chunks, [Bytes::from_static(b"abcd")]);
    }

    /// `body`'s chunks, each checked to hold at most an eighth more memory than its bytes
    /// (a chunk that came as it was sent, not owned by the body alone, is not looked at).
    async fn assert_holds_little_unused_room(mut body: VerifiedBody) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(chunk) = frame.unwrap().into_data() else {
                continue;
            };
            match chunk.try_into_mut() {
                Ok(owned) => {
                    let (len, capacity) = (owned.len(), owned.capacity());
                    assert!(capacity * 7 <= len * 8, "{len} bytes in {capacity}");
                    chunks.push(owned.freeze());
                }
                Err(shared) => chunks.push(shared),
            }
        }
        chunks
    }

    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        let over = read_limited(Full::new(Bytes::from(vec![0u8; 11])), 10).await;
        assert_eq!(over.unwrap_err(), Rejection::BodyTooLarge { limit: 10 });
        let at = read_limited(Full::new(Bytes::from(vec![0u8; 10])), 10).await;
        assert_eq!(at.unwrap().len(), 10);
    }
}
