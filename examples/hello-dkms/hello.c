// SPDX-License-Identifier: GPL-2.0
/* A minimal module for rdkms demos and tests: logs on load and unload. */
#include <linux/init.h>
#include <linux/module.h>

static int __init hello_init(void)
{
	pr_info("hello: loaded (built by rdkms)\n");
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("hello: unloaded\n");
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("rdkms example module");
MODULE_VERSION("1.0");
