//! The controller as the API server sees it ([`Service`]): the server knows
//! nothing of the controller beyond this.
use super::*;
use crate::api::protocol::CaptureRequest;
use crate::api::server::Service;
use crate::capture::{Armed, CaptureError, Target};

impl Service for Controller {
    type Error = ControlError;

    fn handle(&mut self, req: Request) -> (Reply, After) {
        Controller::handle(self, req)
    }

    fn arm_capture(&mut self, req: &CaptureRequest) -> Result<Armed, CaptureError> {
        let kernel = &self.kernel;
        let ifindex = |name: &str| kernel.links.get(name).map(|l| l.ifindex);
        let target = Target {
            config: &self.state.config,
            customer_ids: &self.state.ids.customers,
            ifindex: &ifindex,
            maps_dir: self.dp.as_ref().map(|d| d.maps_dir()),
            observe: self.observe.as_mut(),
        };
        crate::capture::arm(target, req)
    }

    fn disarm_capture(&mut self) {
        crate::capture::disarm(self.observe.as_mut());
    }
}
