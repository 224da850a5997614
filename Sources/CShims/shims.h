// Small C pieces Swift does not expose. Header only: nothing to link.
#pragma once
#include <malloc.h>  // mallopt (MallocTuning.swift)
