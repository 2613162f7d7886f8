//! The engine thread of `candor serve`: the one owner of the model, fed through a bounded
//! queue. HTTP handlers never touch the model; they submit jobs and await the reply. A job is
//! either a closure run on the model, or one constrained dict — the dicts waiting together with
//! the same labels advance as one batch ([`ModelBackend::generate_constrained_batch`]), so
//! concurrent clients share the model's batched forward passes.

use candor_backend::{ConstrainedGeneration, ConstrainedOptions, ModelBackend};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use tokio::sync::oneshot;

use crate::api::ApiError;

/// Most jobs taken from the queue at once (and so most dicts in one batch).
const MOST_JOBS_PER_ROUND: usize = 16;

/// Work for the engine thread.
pub enum Job<B> {
    /// Anything, run on the model; the closure replies itself.
    Run(Box<dyn FnOnce(&B) + Send>),
    /// One constrained dict after `tokens`.
    Constrained(ConstrainedJob),
}

/// A constrained dict to generate and where its answer goes.
pub struct ConstrainedJob {
    /// The prompt's tokens.
    pub tokens: Vec<u32>,
    /// The dict's keys, in order.
    pub labels: Vec<String>,
    /// Number grammar settings.
    pub options: ConstrainedOptions,
    /// Where the dict (or the engine's error) goes.
    pub reply: oneshot::Sender<Result<ConstrainedGeneration, ApiError>>,
}

/// The handlers' side of the queue.
pub struct EngineHandle<B> {
    queue: SyncSender<Job<B>>,
    capacity: usize,
}

impl<B> Clone for EngineHandle<B> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), capacity: self.capacity }
    }
}

impl<B: ModelBackend + 'static> EngineHandle<B> {
    /// Starts the engine thread owning `backend`, with a queue of `capacity` jobs.
    pub fn start(backend: B, capacity: usize) -> Self
    where
        B: Send,
    {
        let (queue, jobs) = std::sync::mpsc::sync_channel(capacity);
        std::thread::spawn(move || run_engine(&backend, &jobs));
        Self { queue, capacity }
    }

    /// Queues `job`; a full queue is a 503.
    pub fn submit(&self, job: Job<B>) -> Result<(), ApiError> {
        self.queue.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => ApiError::busy(self.capacity),
            TrySendError::Disconnected(_) => ApiError::internal("the engine has stopped"),
        })
    }

    /// Runs `work` on the model and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&B) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Run(Box::new(move |backend: &B| {
            // The handler may have gone (client disconnected): nothing to tell it then.
            let _ = reply.send(work(backend));
        })))?;
        answer.await.map_err(|_| ApiError::internal("the engine dropped the request"))?
    }

    /// Generates one constrained dict (batched with others waiting).
    pub async fn constrained(
        &self,
        tokens: Vec<u32>,
        labels: Vec<String>,
        options: ConstrainedOptions,
    ) -> Result<ConstrainedGeneration, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Constrained(ConstrainedJob { tokens, labels, options, reply }))?;
        answer.await.map_err(|_| ApiError::internal("the engine dropped the request"))?
    }
}

/// The engine loop: take what is waiting (up to [`MOST_JOBS_PER_ROUND`]), run closures in
/// order, batch the dicts by labels. Ends when every handle is gone.
fn run_engine<B: ModelBackend>(backend: &B, jobs: &Receiver<Job<B>>) {
    while let Ok(first) = jobs.recv() {
        let mut round = vec![first];
        while round.len() < MOST_JOBS_PER_ROUND {
            match jobs.try_recv() {
                Ok(job) => round.push(job),
                Err(_) => break,
            }
        }
        let mut dicts = Vec::new();
        for job in round {
            match job {
                Job::Run(work) => work(backend),
                Job::Constrained(job) => dicts.push(job),
            }
        }
        while !dicts.is_empty() {
            let (labels, options) = (dicts[0].labels.clone(), dicts[0].options);
            let (same, rest): (Vec<_>, Vec<_>) =
                dicts.into_iter().partition(|job| job.labels == labels && job.options == options);
            generate_dicts(backend, same, &labels, &options);
            dicts = rest;
        }
    }
}

/// Generates the dicts of `jobs` (same labels and options) as one batch and replies to each.
fn generate_dicts<B: ModelBackend>(backend: &B, jobs: Vec<ConstrainedJob>, labels: &[String], options: &ConstrainedOptions) {
    let prefixes: Result<Vec<B::Prefix>, _> = jobs.iter().map(|job| backend.prefill(&job.tokens)).collect();
    let result = prefixes.and_then(|prefixes| {
        let refs: Vec<&B::Prefix> = prefixes.iter().collect();
        backend.generate_constrained_batch(&refs, labels, options)
    });
    match result {
        Ok(generations) => {
            for (job, generation) in jobs.into_iter().zip(generations) {
                let _ = job.reply.send(Ok(generation));
            }
        }
        Err(error) => {
            let error = ApiError::from(error);
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}
