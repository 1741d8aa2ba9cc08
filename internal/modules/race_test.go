//go:build race

package modules_test

func init() { raceEnabled = true }
