//! A supervisor as the child of another.

use std::sync::Arc;
use std::time::Duration;

use super::builder::SupervisorBuilder;
use super::error::SUPERVISOR;
use super::handle::Supervisor;
use super::shared::ParentHook;
use super::spec::{Child, ChildKind, ChildSpec, Registry, Restart, Shutdown};
use crate::error::ExitReason;
use crate::error::SpawnError;
use crate::isolate::{Leftover, Priority};

/// A supervisor as a child of another.
struct Nested {
    name: String,
    builder: SupervisorBuilder,
    registry: Registry,
    current: Option<Supervisor>,
}

impl Child for Nested {
    fn start(
        &mut self,
        exited: Box<dyn Fn(ExitReason, Option<Leftover>) + Send + Sync>,
    ) -> Result<(), SpawnError> {
        let parent: ParentHook = Box::new(move |reason| exited(reason, None));
        let supervisor = self.builder.clone().start_inner(Some(parent))?;
        self.registry.lock().insert(
            self.name.clone(),
            (Box::new(supervisor.clone()), SUPERVISOR),
        );
        self.current = Some(supervisor);
        Ok(())
    }

    fn ended(&mut self, _: Option<Leftover>) {
        self.current = None;
    }

    fn stop(&self, _: Priority) {
        if let Some(current) = &self.current {
            current.stop();
        }
    }

    fn close(&mut self, _: ExitReason) {
        if let Some(current) = self.current.take() {
            current.stop();
        }
    }
}

impl ChildSpec {
    /// A nested supervisor named `name`. It is started (and restarted) from
    /// `builder`; a restart starts a fresh tree.
    ///
    /// # Examples
    ///
    /// See [`ChildSpec`].
    pub fn supervisor(name: impl Into<String>, builder: SupervisorBuilder) -> Self {
        let name = name.into();
        let nested_name = name.clone();
        ChildSpec {
            name,
            restart: Restart::default(),
            // A supervisor stops its own children first; give it time.
            shutdown: Shutdown::Timeout(Duration::from_secs(30)),
            kind: ChildKind::Supervisor,
            factory: Arc::new(move |registry: &Registry| {
                Ok(Box::new(Nested {
                    name: nested_name.clone(),
                    builder: builder.clone(),
                    registry: Arc::clone(registry),
                    current: None,
                }) as Box<dyn Child>)
            }),
        }
    }
}
