//! `showrunner-notification-worker`: see `showrunner_workers::Role::Notification`.

fn main() {
    showrunner_workers::Role::Notification.main()
}
