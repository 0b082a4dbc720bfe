#include "common/json_writer.h"
