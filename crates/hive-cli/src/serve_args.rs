//! The daemon's flags (`rbee-hive [serve] …`), each with its environment variable; the
//! daemon puts the ones given over its config file (flag > environment > file > default).

use std::net::IpAddr;
use std::path::PathBuf;

/// The daemon's flags (`rbee-hive [serve] …`); each also has an environment variable.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct ServeArgs {
    /// TCP port to listen on (0 picks a free one) [default: 7835]
    #[arg(long, env = "RBEE_HIVE_PORT")]
    pub port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "RBEE_HIVE_BIND")]
    pub bind: Option<IpAddr>,
    /// Config file (TOML) [default: $XDG_CONFIG_HOME/rbee/hive.toml or
    /// ~/.config/rbee/hive.toml, when it exists]
    #[arg(long, env = "RBEE_HIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for worker logs and the state file [default: $XDG_STATE_HOME/rbee-hive]
    #[arg(long, env = "RBEE_HIVE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Model and worker-binary catalog [default: $XDG_CACHE_HOME/rbee or ~/.cache/rbee]
    #[arg(long, env = "RBEE_HIVE_CATALOG_DIR")]
    pub catalog_dir: Option<PathBuf>,
    /// This hive's id (the global `--hive-id`, shared with the client commands): when set,
    /// a job naming another `hive_id` fails with the reason; when not, any is accepted.
    #[arg(skip)]
    pub hive_id: Option<String>,
    /// URL of the queen-rbee orchestrator: the hive registers with it (today's rbee) and
    /// passes it to workers as {queen_url}
    #[arg(long, env = "RBEE_HIVE_QUEEN_URL")]
    pub queen_url: Option<String>,
    /// The URL the queen and this hive's workers reach the hive at [default: http://BIND:PORT;
    /// when bound to all addresses, 127.0.0.1 or ::1 for workers and the machine's hostname
    /// for the queen]
    #[arg(long, env = "RBEE_HIVE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// URL of the worker catalog server that worker_catalog_list/get and worker_install
    /// read (upstream's listens on http://localhost:8787) [default: none]
    #[arg(long, env = "RBEE_HIVE_WORKER_CATALOG_URL")]
    pub worker_catalog_url: Option<String>,
    /// The worker type `model_load` starts [default: llama where llama-server is found,
    /// else the rbee worker type of the device's kind]
    #[arg(long, env = "RBEE_HIVE_LOAD_WORKER")]
    pub load_worker: Option<String>,
    /// The file holding the API token (the global `--token-file`, shared with the client
    /// commands): when set, every route but /health needs it.
    #[arg(skip)]
    pub token_file: Option<PathBuf>,
    /// Print the merged configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
}
