//! The running mesh: watching its components and carrying out the requests
//! dropped in `<run-dir>/control` (stop, start, restart, new values) until
//! it is told to stop.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::run::{READY_TIMEOUT, Running, STOP_GRACE};
use super::state::{self, Action, State};
use super::supervisor::Component;
use super::values::Live;

/// Serves control requests and notes exits until `stop` is set.
pub fn serve(
    run_dir: &Path,
    running: &mut Running,
    state: &mut State,
    live: &mut Live<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        note_exits(running, state);
        for request in state::control_requests(run_dir)? {
            let action = match &request.action {
                Ok(Action::Set) => {
                    live.handle(request, state)?;
                    continue;
                }
                Ok(action) => *action,
                Err(unknown) => {
                    eprintln!("{}: {unknown}", request.component);
                    request.done()?;
                    continue;
                }
            };
            let position = running
                .components
                .iter()
                .position(|c| c.spec.name == request.component);
            let outcome = match position {
                None => Err(anyhow::anyhow!("no component named {}", request.component)),
                Some(i) => apply(&mut running.components[i], action).map(|pid| {
                    state.components[i].pid = pid;
                    state.components[i].running = pid.is_some();
                    state.components[i].restarts += u32::from(action != Action::Stop);
                }),
            };
            match outcome {
                Ok(()) => println!("{action} {}: done", request.component),
                Err(err) => eprintln!("{action} {}: {err:#}", request.component),
            }
            request.done()?;
            state.dirty = true;
        }
        if state.dirty {
            state.write()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Marks the components that exited on their own as stopped.
fn note_exits(running: &mut Running, state: &mut State) {
    for (component, component_state) in running
        .components
        .iter_mut()
        .zip(state.components.iter_mut())
    {
        if let Some(status) = component.poll_exit() {
            eprintln!(
                "{} exited ({status}); see {}",
                component.spec.name,
                component.spec.log.display()
            );
            component_state.running = false;
            component_state.pid = None;
            state.dirty = true;
        }
    }
}

/// Stops, starts or restarts one component; the new pid when it runs
/// afterwards. (`set` acts on the values, never here.)
fn apply(component: &mut Component, action: Action) -> anyhow::Result<Option<u32>> {
    component.stop(STOP_GRACE);
    if action == Action::Stop {
        return Ok(None);
    }
    component.start()?;
    component.wait_ready(READY_TIMEOUT, &AtomicBool::new(false))?;
    Ok(component.pid())
}
