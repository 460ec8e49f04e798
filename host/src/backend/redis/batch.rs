//! Natural batching: requests that arrive while a call to Redis is in flight
//! go together in the next call. A lone request goes at once (no added
//! latency); under load, one script call serves many steps.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::backend::BackendError;

type Reply<T> = oneshot::Sender<Result<T, BackendError>>;

/// Sends requests of type `Q` in batches to a function answering each with an `A`.
pub struct Batcher<Q, A> {
    tx: mpsc::UnboundedSender<(Q, Reply<A>)>,
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// `call` answers a batch (in order) or fails it as a whole.
    pub fn new<F, Fut>(max: usize, call: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, BackendError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Q, Reply<A>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut requests = vec![first.0];
                let mut replies = vec![first.1];
                while requests.len() < max {
                    match rx.try_recv() {
                        Ok((q, r)) => {
                            requests.push(q);
                            replies.push(r);
                        }
                        Err(_) => break,
                    }
                }
                match call(requests).await {
                    Ok(answers) if answers.len() == replies.len() => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Ok(answers) => {
                        let e = BackendError::Corrupt(format!(
                            "a batch of {} got {} answers",
                            replies.len(),
                            answers.len()
                        ));
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Sends one request with whatever else is waiting, and returns its answer.
    pub async fn call(&self, request: Q) -> Result<A, BackendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((request, reply))
            .map_err(|_| BackendError::Unavailable("the batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| BackendError::Unavailable("the batcher stopped".into()))?
    }
}
