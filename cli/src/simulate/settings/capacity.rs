//! The metastable scenario's flags: the capacity the target keeps all run long and the slower
//! service of the trigger. Apart from the other faults because they come in a pair (a base the
//! target returns to, and the window's fault), where every other scenario clears its fault.

use super::{InvalidArgs, SimulateArgs};
use crate::simulate::scenario::{Fault, Scenario};

impl SimulateArgs {
    /// Refuses the capacity flags outside the metastable scenario.
    pub(super) fn check_capacity_flags(&self) -> Result<(), InvalidArgs> {
        let given = self.workers.is_some()
            || self.service_ms.is_some()
            || self.trigger_service_ms.is_some();
        if given && self.scenario != Scenario::Metastable {
            return Err(InvalidArgs(format!(
                "--workers/--service-ms/--trigger-service-ms belong to the metastable scenario, \
                 not {}",
                self.scenario.name()
            )));
        }
        Ok(())
    }

    /// The capacity a metastable run's target keeps outside the trigger; `None` otherwise.
    pub(super) fn base_fault(&self) -> Result<Option<Fault>, InvalidArgs> {
        if self.scenario != Scenario::Metastable {
            return Ok(None);
        }
        let workers = self.workers.unwrap_or(2);
        let service_ms = self.service_ms.unwrap_or(50);
        if !(1..=10_000).contains(&workers) {
            return Err(InvalidArgs(format!(
                "--workers must be from 1 to 10000, got {workers}"
            )));
        }
        if !(1..=60_000).contains(&service_ms) {
            return Err(InvalidArgs(format!(
                "--service-ms must be from 1 to 60000, got {service_ms}"
            )));
        }
        Ok(Some(Fault::capacity(workers, service_ms)))
    }

    /// The trigger: the same workers, a slower service.
    pub(super) fn trigger(&self) -> Result<Fault, InvalidArgs> {
        let base = self.service_ms.unwrap_or(50);
        let trigger = self.trigger_service_ms.unwrap_or(base.max(300));
        if trigger <= base || trigger > 60_000 {
            return Err(InvalidArgs(format!(
                "--trigger-service-ms must be above --service-ms ({base}) and at most 60000, got \
                 {trigger}"
            )));
        }
        Ok(Fault::capacity(self.workers.unwrap_or(2), trigger))
    }
}
