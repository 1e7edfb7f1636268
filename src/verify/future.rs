use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

type Verifying<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`Verify`](super::Verify): the inner service's future `F`, or the
    /// verifier's answer.
    ///
    /// A request refused on its header alone, or verified at once (its body had arrived and
    /// both stores answered without waiting), costs no allocation here: it is answered, or
    /// goes to the inner service, from the service's `call`. Any other request goes through
    /// the key lookup, the body, the MAC and the replay record in a boxed future first.
    pub struct ResponseFuture<F: Future> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F: Future> {
        Called { #[pin] future: F },
        Verifying { future: Verifying<F::Output> },
        Refused { #[pin] answer: Ready<F::Output> },
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            state: State::Called { future },
        }
    }

    pub(crate) fn verifying(future: Verifying<F::Output>) -> Self {
        ResponseFuture {
            state: State::Verifying { future },
        }
    }

    pub(crate) fn refused(answer: F::Output) -> Self {
        ResponseFuture {
            state: State::Refused {
                answer: std::future::ready(answer),
            },
        }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => future.poll(cx),
            StateProj::Verifying { future } => future.as_mut().poll(cx),
            StateProj::Refused { answer } => answer.poll(cx),
        }
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
