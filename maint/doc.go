// Package maint holds dj's maintenance operations on a repository: checking
// its consistency, deciding which snapshots a retention policy keeps
// (forget), removing unused data (prune, repack), comparing two snapshots
// (diff), statistics and repair.
//
// Each operation depends only on the small interfaces it declares (for
// example [TreeLoader] for [Diff]), not on the whole repository, so it can be
// tested with in-memory fakes. The package never imports the FUSE layer.
package maint
