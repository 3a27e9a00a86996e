# SPDX-License-Identifier: MIT
# The manual pages, included by Makefile.am; paths are relative to the top directory.
# The first pages document the library and groups of functions; every other function
# has a one-line page (.so man3/<group page>) so that `man nursery_<name>` finds it.

dist_man_MANS = \
	man/nursery.7 \
	man/nursery_cancelled.3 \
	man/nursery_capture_start_soon.3 \
	man/nursery_channel_create.3 \
	man/nursery_error_create.3 \
	man/nursery_future_create.3 \
	man/nursery_now.3 \
	man/nursery_open.3 \
	man/nursery_pool_create.3 \
	man/nursery_result_wait.3 \
	man/nursery_start_soon.3 \
	man/nursery_wait_any.3 \
	man/nursery_after_ms.3 \
	man/nursery_after_ns.3 \
	man/nursery_cancel.3 \
	man/nursery_capture_create.3 \
	man/nursery_capture_run.3 \
	man/nursery_capture_start_and_done.3 \
	man/nursery_channel_recv.3 \
	man/nursery_channel_send.3 \
	man/nursery_channel_try_recv.3 \
	man/nursery_channel_try_send.3 \
	man/nursery_checkpoint.3 \
	man/nursery_error_code.3 \
	man/nursery_error_message.3 \
	man/nursery_error_payload.3 \
	man/nursery_error_release.3 \
	man/nursery_error_retain.3 \
	man/nursery_error_set_payload.3 \
	man/nursery_error_task_name.3 \
	man/nursery_errors_cancelled.3 \
	man/nursery_errors_count.3 \
	man/nursery_errors_dropped.3 \
	man/nursery_errors_free.3 \
	man/nursery_errors_get.3 \
	man/nursery_fail.3 \
	man/nursery_fail_with.3 \
	man/nursery_future_fail.3 \
	man/nursery_future_set_error.3 \
	man/nursery_future_set_value.3 \
	man/nursery_join.3 \
	man/nursery_last_error.3 \
	man/nursery_pool_default.3 \
	man/nursery_pool_destroy.3 \
	man/nursery_pool_stats.3 \
	man/nursery_receiver_clone.3 \
	man/nursery_receiver_close.3 \
	man/nursery_receiver_free.3 \
	man/nursery_receiver_stats.3 \
	man/nursery_release.3 \
	man/nursery_result_cancel.3 \
	man/nursery_result_error.3 \
	man/nursery_result_format.3 \
	man/nursery_result_is_done.3 \
	man/nursery_result_release.3 \
	man/nursery_result_retain.3 \
	man/nursery_result_value.3 \
	man/nursery_results_to_channel.3 \
	man/nursery_retain.3 \
	man/nursery_run.3 \
	man/nursery_sender_clone.3 \
	man/nursery_sender_close.3 \
	man/nursery_sender_free.3 \
	man/nursery_sender_stats.3 \
	man/nursery_sleep.3 \
	man/nursery_start.3 \
	man/nursery_started.3 \
	man/nursery_strerror.3 \
	man/nursery_wait_all.3
