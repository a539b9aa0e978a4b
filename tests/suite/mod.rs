mod cli;
mod enforce_fs;
mod enforce_process;
mod invalid_profiles;
mod shipped_profiles;
