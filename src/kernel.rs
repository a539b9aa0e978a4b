//! What the running kernel offers, asked once per run: the plan is built for
//! this kernel, and a profile that needs more than it offers is refused.

use serde::Serialize;

use crate::landlock;
use crate::sandbox::sys;

/// The features of the running kernel that change the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Landlock ABI version; 0 when Landlock is unavailable.
    pub landlock_abi: u32,
}

impl Kernel {
    /// Asks the kernel.
    pub fn probe() -> Kernel {
        Kernel {
            landlock_abi: sys::landlock_abi(),
        }
    }

    /// A human-readable report, for `ninewall probe`.
    pub fn describe(&self) -> String {
        let abi = self.landlock_abi;
        let mut s = String::new();
        if abi == 0 {
            s.push_str("landlock     unavailable (not built in, or not in the lsm= list)\n");
        } else {
            s.push_str(&format!("landlock     ABI {abi}\n"));
            s.push_str(&format!(
                "  fs         {}\n",
                landlock::fs_names(landlock::fs_rights(abi)).join(" ")
            ));
            let net = landlock::net_names(landlock::net_rights(abi));
            s.push_str(&format!(
                "  net        {}\n",
                if net.is_empty() { "(none)".into() } else { net.join(" ") }
            ));
            let sc = landlock::scope_names(landlock::scopes(abi));
            s.push_str(&format!(
                "  scopes     {}\n",
                if sc.is_empty() { "(none)".into() } else { sc.join(" ") }
            ));
            let missing: Vec<String> = landlock::Feature::ALL
                .iter()
                .filter(|f| f.abi() > abi)
                .map(|f| f.to_string())
                .collect();
            if !missing.is_empty() {
                s.push_str(&format!("  missing    {}\n", missing.join(", ")));
            }
        }
        let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
        s.push_str(&format!("userns       max_user_namespaces = {}\n", userns.trim()));
        s.trim_end().to_string()
    }
}
