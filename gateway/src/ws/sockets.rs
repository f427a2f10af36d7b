//! The people's WebSockets open in this process, by user and session, so that they follow their
//! session: when it ends, or when the account is deactivated or given another role (wherever that
//! happened: [`crate::session::follow`] hears of it), the server closes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use devart_domain::user::UserRole;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Close;
use crate::auth::{AuthError, Role};

/// One socket as it was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub user: Uuid,
    /// Set when the socket was opened with the session cookie.
    pub session: Option<Uuid>,
    /// The role the socket's operations run with.
    pub role: Role,
}

impl Watched {
    /// How the socket must close now that its account is as given (`None`: gone), and its session
    /// live or not; `None` while both still serve it.
    pub fn verdict(&self, account: Option<(Result<UserRole, String>, bool)>, session_live: bool) -> Option<Close> {
        match account {
            None | Some((_, false)) => Some(Close::Forbidden(AuthError::UserDeactivated)),
            Some((Ok(role), true)) if Role::of(role) == self.role => {
                (!session_live).then_some(Close::SessionEnded("the session has ended"))
            }
            // Reconnecting reads the role anew (or finds the session ended).
            Some(_) => Some(Close::SessionEnded("the user's role changed")),
        }
    }
}

struct Open {
    watched: Watched,
    close: oneshot::Sender<Close>,
}

/// The registry of people's open sockets.
#[derive(Default)]
pub struct Sockets {
    open: Mutex<HashMap<u64, Open>>,
    next: AtomicU64,
}

/// A socket's place in the registry; given back when dropped.
pub struct Registration {
    sockets: Arc<Sockets>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sockets.open.lock().expect("sockets lock").remove(&self.id);
    }
}

impl Sockets {
    /// Registers a socket; the receiver hears how the server is to close it.
    pub fn register(self: &Arc<Self>, watched: Watched) -> (Registration, oneshot::Receiver<Close>) {
        let (close, closed) = oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("sockets lock").insert(id, Open { watched, close });
        (Registration { sockets: self.clone(), id }, closed)
    }

    /// Every socket open now, by its registration.
    pub fn watched(&self) -> Vec<(u64, Watched)> {
        self.open.lock().expect("sockets lock").iter().map(|(id, open)| (*id, open.watched)).collect()
    }

    /// Closes the sockets for which `verdict` has a close; how many.
    pub fn close_where(&self, mut verdict: impl FnMut(u64, &Watched) -> Option<Close>) -> usize {
        let mut open = self.open.lock().expect("sockets lock");
        let closing: Vec<(u64, Close)> =
            open.iter().filter_map(|(id, o)| verdict(*id, &o.watched).map(|close| (*id, close))).collect();
        for (id, close) in &closing {
            if let Some(socket) = open.remove(id) {
                // A socket that is closing already has dropped its receiver: nothing to tell it.
                let _ = socket.close.send(close.clone());
            }
        }
        closing.len()
    }

    /// Closes the sockets of `session`, which ended.
    pub fn session_ended(&self, session: Uuid) -> usize {
        self.close_where(|_, w| (w.session == Some(session)).then_some(Close::SessionEnded("the session has ended")))
    }

    /// Closes the sockets of `user` that their account, as it is now, no longer serves.
    pub fn account_changed(&self, user: Uuid, role: Result<UserRole, String>, active: bool) -> usize {
        self.close_where(|_, w| if w.user == user { w.verdict(Some((role.clone(), active)), true) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(user: Uuid, session: Option<Uuid>, role: Role) -> Watched {
        Watched { user, session, role }
    }

    #[test]
    fn a_sockets_session_and_account_decide_when_it_closes() {
        let socket = watched(Uuid::nil(), Some(Uuid::nil()), Role::Supervisor);
        assert_eq!(socket.verdict(Some((Ok(UserRole::Supervisor), true)), true), None);
        assert_eq!(socket.verdict(Some((Ok(UserRole::Supervisor), true)), false).unwrap().code(), 4401);
        assert_eq!(socket.verdict(Some((Ok(UserRole::Admin), true)), true).unwrap().code(), 4401);
        assert_eq!(socket.verdict(Some((Err("Admin".into()), true)), true).unwrap().code(), 4401);
        assert_eq!(socket.verdict(Some((Ok(UserRole::Supervisor), false)), true).unwrap().code(), 4403);
        assert_eq!(socket.verdict(None, true).unwrap().code(), 4403);
    }

    #[tokio::test]
    async fn only_the_sockets_concerned_are_closed_and_a_dropped_one_is_forgotten() {
        let sockets = Arc::new(Sockets::default());
        let (ada, sam, session) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (_a, mut by_cookie) = sockets.register(watched(ada, Some(session), Role::Admin));
        let (_b, mut by_token) = sockets.register(watched(ada, None, Role::Admin));
        let (_c, mut other) = sockets.register(watched(sam, None, Role::Viewer));
        assert_eq!(sockets.session_ended(session), 1);
        assert_eq!(by_cookie.try_recv().unwrap().code(), 4401);
        assert_eq!(sockets.account_changed(ada, Ok(UserRole::Admin), true), 0, "nothing changed for it");
        assert_eq!(sockets.account_changed(ada, Ok(UserRole::Admin), false), 1);
        assert_eq!(by_token.try_recv().unwrap().code(), 4403);
        assert!(other.try_recv().is_err(), "another user's socket stays open");
        let (dropped, _) = sockets.register(watched(sam, None, Role::Viewer));
        drop(dropped);
        assert_eq!(sockets.watched().len(), 1);
        assert_eq!(sockets.account_changed(sam, Ok(UserRole::Supervisor), true), 1);
        assert_eq!(other.try_recv().unwrap().code(), 4401);
    }
}
