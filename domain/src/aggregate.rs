//! The shape every aggregate has, and the given/when/then harness that specifies them.

use std::fmt::Debug;

/// Why a command was refused. Each kind maps to one client-facing error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command's input is malformed (`BAD_USER_INPUT`).
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// The aggregate does not exist, or no longer does (`NOT_FOUND`).
    #[error("{0} not found")]
    NotFound(String),
    /// The command does not fit the aggregate's current state (`CONFLICT`).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this to this aggregate, whatever its role (`FORBIDDEN`): an agent
    /// reporting on a task another agent holds.
    #[error("{0}")]
    Forbidden(String),
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> DomainError {
        DomainError::Invalid { field, message: message.into() }
    }
}

/// An event-sourced aggregate: state folded from its events, commands decided against that state.
pub trait Aggregate {
    /// The stream prefix and subject token (`task`).
    const KIND: &'static str;
    /// `Default` is the state before the stream's first event.
    type State: Default + Clone + Debug;
    type Command: Debug;
    type Event: Clone + Debug + PartialEq;

    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::State::default(), Self::evolve)
    }
}

/// Specifications for aggregates: `given(past events).when(command).then(new events)`.
pub struct Given<A: Aggregate> {
    state: A::State,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given { state: A::fold(&events) }
}

pub struct When<A: Aggregate> {
    result: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> When<A> {
        When { result: A::decide(&self.state, &command) }
    }
}

impl<A: Aggregate> When<A> {
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected),
            Err(error) => panic!("expected events {expected:?}, got error {error:?}"),
        }
    }

    #[track_caller]
    pub fn then_error(self, expected: DomainError) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }
}
