use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

type Verifying<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`VerifyPsk`](super::VerifyPsk).
    ///
    /// A request refused on its header alone (no credential, a malformed one, a timestamp
    /// out of the window) is answered at once, without allocating; any other goes through the
    /// key lookup, the body, the MAC and the replay record before the inner service.
    pub struct ResponseFuture<T> {
        #[pin]
        state: State<T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<T> {
        Verifying { future: Verifying<T> },
        Refused { #[pin] answer: Ready<T> },
    }
}

impl<T> ResponseFuture<T> {
    pub(crate) fn verifying(future: Verifying<T>) -> Self {
        ResponseFuture {
            state: State::Verifying { future },
        }
    }

    pub(crate) fn refused(answer: T) -> Self {
        ResponseFuture {
            state: State::Refused {
                answer: std::future::ready(answer),
            },
        }
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project().state.project() {
            StateProj::Verifying { future } => future.as_mut().poll(cx),
            StateProj::Refused { answer } => answer.poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
