mod cli;
mod enforce_fs;
mod enforce_landlock;
mod enforce_process;
mod invalid_profiles;
mod plan_golden;
mod profile_merge;
mod shipped_profiles;
