"""The fictional vehicle the demo service manual describes: systems, components and spec ranges.

Values are drawn from these ranges by the seeded generator, so the facts differ per seed while the
structure (which questions make sense) stays fixed. All names are invented.

Over 400 lines on purpose: it is data (systems, components, spec ranges), not logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VEHICLE = "Halden Vireo 1.6T"
MAKER = "Halden Motor Works"
MODEL_YEAR = 2025


@dataclass(frozen=True)
class Component:
    name: str
    function: str  # two sentences: what it does and how
    electrical: bool = False  # has a connector, wiring table and fault codes
    access: str = "engine cover"  # what is removed to reach it


@dataclass(frozen=True)
class SpecRange:
    name: str
    low: float
    high: float
    step: float
    unit: str


@dataclass(frozen=True)
class System:
    name: str
    code: str  # two letters, used in connector ids
    dtc_prefix: str  # P, C, B or U
    components: tuple[Component, ...]
    specs: tuple[SpecRange, ...] = field(default=())


C, S = Component, SpecRange

SYSTEMS: tuple[System, ...] = (
    System(
        "Engine Mechanical",
        "EM",
        "P",
        (
            C(
                "cylinder head",
                "The cylinder head closes the combustion chambers and carries the two "
                "overhead camshafts, sixteen valves and the spark plug bores. Coolant passages around the "
                "exhaust ports keep the valve seats below their temperature limit under full load.",
                access="intake manifold",
            ),
            C(
                "timing chain tensioner",
                "The hydraulic timing chain tensioner keeps the chain taut "
                "using engine oil pressure and a ratchet plunger. When oil pressure is low at start-up, "
                "the ratchet holds the plunger so the chain cannot skip a tooth.",
                access="front cover",
            ),
            C(
                "camshaft position sensor",
                "The camshaft position sensor is a Hall-effect sensor that "
                "reads a four-lobe target wheel on the intake camshaft. The engine control module uses "
                "its signal to identify cylinder one and to measure variable valve timing angle.",
                electrical=True,
            ),
            C(
                "oil pressure switch",
                "The oil pressure switch closes a ground circuit when oil "
                "pressure falls below its threshold. The instrument cluster lights the oil warning lamp "
                "and the engine control module records the event with engine speed.",
                electrical=True,
                access="oil filter housing cover",
            ),
        ),
        (
            S("Engine oil capacity with filter", 3.8, 4.6, 0.1, "L"),
            S("Compression pressure, minimum", 10.0, 12.5, 0.5, "bar"),
            S("Intake valve clearance (cold)", 0.18, 0.24, 0.01, "mm"),
            S("Exhaust valve clearance (cold)", 0.26, 0.34, 0.01, "mm"),
            S("Oil pressure at idle, minimum", 1.0, 1.6, 0.1, "bar"),
        ),
    ),
    System(
        "Engine Cooling",
        "CO",
        "P",
        (
            C(
                "water pump",
                "The water pump is driven by the auxiliary belt and circulates coolant "
                "through the block, head and radiator. Its impeller is sized to keep flow above the "
                "boiling margin even at idle with the air conditioning running.",
                access="auxiliary drive belt",
            ),
            C(
                "thermostat",
                "The thermostat is a wax-element valve that holds coolant in the engine "
                "until operating temperature is reached. A heating element lets the engine control "
                "module open it early under high load.",
                electrical=True,
                access="air intake duct",
            ),
            C(
                "coolant temperature sensor",
                "The coolant temperature sensor is a negative temperature "
                "coefficient thermistor in the outlet housing. Its resistance falls as coolant warms, "
                "and the engine control module reads the voltage across it.",
                electrical=True,
                access="air intake duct",
            ),
            C(
                "radiator fan",
                "The radiator fan is a brushless motor driven by its own control module "
                "with a pulse-width signal. Fan speed rises with coolant temperature and refrigerant "
                "pressure.",
                electrical=True,
                access="front bumper cover",
            ),
        ),
        (
            S("Coolant capacity", 5.2, 6.6, 0.1, "L"),
            S("Thermostat opening temperature", 86, 92, 1, "°C"),
            S("Cooling system test pressure", 1.3, 1.6, 0.1, "bar"),
            S("Radiator cap opening pressure", 1.1, 1.4, 0.1, "bar"),
        ),
    ),
    System(
        "Fuel Injection",
        "FI",
        "P",
        (
            C(
                "high-pressure fuel pump",
                "The high-pressure fuel pump is a single-piston pump driven "
                "by a lobe on the exhaust camshaft. A quantity control valve meters how much fuel enters "
                "the pump chamber on each stroke.",
                electrical=True,
                access="engine cover",
            ),
            C(
                "fuel rail pressure sensor",
                "The fuel rail pressure sensor is a strain-gauge sensor "
                "at the end of the rail. The engine control module compares its reading with the "
                "target and corrects the pump control valve duty.",
                electrical=True,
            ),
            C(
                "fuel injector",
                "Each fuel injector is a solenoid valve that sprays directly into the "
                "cylinder. The engine control module drives it with a boost voltage to open it quickly "
                "and a holding current to keep it open.",
                electrical=True,
            ),
            C(
                "low-pressure fuel pump",
                "The low-pressure fuel pump sits in the tank and feeds the "
                "high-pressure pump. A control module varies its speed to hold the feed pressure.",
                electrical=True,
                access="rear seat cushion",
            ),
        ),
        (
            S("Fuel rail pressure at idle", 35, 60, 5, "bar"),
            S("Low-pressure feed pressure", 4.0, 6.0, 0.5, "bar"),
            S("Fuel tank capacity", 45, 55, 1, "L"),
        ),
    ),
    System(
        "Ignition",
        "IG",
        "P",
        (
            C(
                "ignition coil",
                "Each cylinder has its own pencil ignition coil with an integrated "
                "driver stage. The engine control module sets dwell time from battery voltage and "
                "engine speed.",
                electrical=True,
            ),
            C(
                "spark plug",
                "The spark plugs are iridium-tipped with a fixed electrode gap. They are "
                "reached through the cylinder head bores after the coils are removed.",
            ),
            C(
                "knock sensor",
                "The knock sensor is a piezoelectric sensor bolted to the block between "
                "cylinders two and three. It lets the engine control module retard ignition timing "
                "cylinder by cylinder when it detects knock.",
                electrical=True,
                access="intake manifold",
            ),
        ),
        (
            S("Spark plug electrode gap", 0.6, 0.8, 0.05, "mm"),
            S("Spark plug replacement interval", 40000, 60000, 10000, "km"),
            S("Ignition coil primary resistance", 0.4, 0.8, 0.1, "ohm"),
        ),
    ),
    System(
        "Turbocharger and Intake",
        "TC",
        "P",
        (
            C(
                "turbocharger",
                "The turbocharger is a single-scroll unit with an electric wastegate "
                "actuator. Boost pressure is closed-loop controlled from the manifold pressure sensor.",
                access="heat shield",
            ),
            C(
                "wastegate actuator",
                "The wastegate actuator is an electric motor with a position "
                "sensor that opens the wastegate flap to limit turbine speed.",
                electrical=True,
                access="heat shield",
            ),
            C(
                "manifold pressure sensor",
                "The manifold absolute pressure sensor measures pressure "
                "and temperature after the throttle. The engine control module calculates air mass "
                "from its signals.",
                electrical=True,
            ),
            C(
                "throttle body",
                "The electronic throttle body has a DC motor and two position sensors "
                "with opposite slopes so that a failed sensor is detected at once.",
                electrical=True,
                access="air intake duct",
            ),
        ),
        (
            S("Maximum boost pressure (relative)", 1.0, 1.4, 0.1, "bar"),
            S("Turbocharger axial play, maximum", 0.08, 0.12, 0.01, "mm"),
        ),
    ),
    System(
        "Exhaust and Emissions",
        "EX",
        "P",
        (
            C(
                "upstream oxygen sensor",
                "The upstream oxygen sensor is a wide-band sensor before the "
                "catalytic converter that reports the air-fuel ratio as a pump current.",
                electrical=True,
                access="heat shield",
            ),
            C(
                "downstream oxygen sensor",
                "The downstream oxygen sensor is a switching sensor after "
                "the catalytic converter used to monitor the converter's oxygen storage.",
                electrical=True,
                access="underbody panel",
            ),
            C(
                "catalytic converter",
                "The close-coupled catalytic converter oxidises hydrocarbons "
                "and carbon monoxide and reduces nitrogen oxides. Its efficiency is checked by "
                "comparing the two oxygen sensor signals.",
                access="heat shield",
            ),
            C(
                "purge valve",
                "The canister purge valve meters fuel vapour from the charcoal canister "
                "into the intake when the engine is warm.",
                electrical=True,
            ),
        ),
        (
            S("Oxygen sensor heater resistance", 2.0, 4.0, 0.5, "ohm"),
            S("Exhaust back pressure at 3000 rpm, maximum", 0.2, 0.4, 0.05, "bar"),
        ),
    ),
    System(
        "Transmission",
        "TR",
        "P",
        (
            C(
                "transmission control module",
                "The transmission control module sits on the valve "
                "body and selects gears from vehicle speed, throttle and torque requests. It adapts "
                "clutch fill pressures as the clutches wear.",
                electrical=True,
                access="transmission oil pan",
            ),
            C(
                "shift solenoid",
                "Each shift solenoid is a pressure-control valve that applies one "
                "clutch pack. Current through the solenoid sets the clutch pressure.",
                electrical=True,
                access="transmission oil pan",
            ),
            C(
                "output speed sensor",
                "The output speed sensor reads a tone ring on the output shaft. "
                "Its signal is used for shift timing and as a backup vehicle speed.",
                electrical=True,
                access="underbody panel",
            ),
        ),
        (
            S("Transmission fluid capacity (refill)", 3.5, 4.5, 0.1, "L"),
            S("Transmission fluid check temperature", 35, 45, 5, "°C"),
            S("Drain plug torque", 35, 50, 5, "Nm"),
        ),
    ),
    System(
        "Brakes",
        "BR",
        "C",
        (
            C(
                "front brake caliper",
                "The front brake calipers are single-piston floating calipers "
                "on ventilated discs. The piston seal retracts the piston slightly after each "
                "application to limit drag.",
                access="front wheel",
            ),
            C(
                "rear brake caliper",
                "The rear brake calipers carry an electric parking brake motor "
                "that drives the piston through a spindle. The parking brake module applies them when "
                "the switch is pulled or the engine is switched off on a slope.",
                electrical=True,
                access="rear wheel",
            ),
            C(
                "wheel speed sensor",
                "Each wheel speed sensor is an active sensor that reads a "
                "magnetic encoder ring in the wheel bearing. The brake control module uses the four "
                "signals for anti-lock braking and stability control.",
                electrical=True,
                access="wheel arch liner",
            ),
            C(
                "brake control module",
                "The brake control module and hydraulic unit modulate pressure "
                "at each wheel. It shares wheel speeds and yaw rate with other modules over the "
                "chassis bus.",
                electrical=True,
                access="air filter housing",
            ),
        ),
        (
            S("Front brake disc minimum thickness", 22.0, 26.0, 0.5, "mm"),
            S("Rear brake disc minimum thickness", 8.0, 10.0, 0.5, "mm"),
            S("Brake pad minimum thickness", 2.0, 3.0, 0.5, "mm"),
            S("Brake disc runout, maximum", 0.03, 0.06, 0.01, "mm"),
            S("Brake fluid replacement interval", 2, 2, 1, "years"),
        ),
    ),
    System(
        "Suspension",
        "SU",
        "C",
        (
            C(
                "front strut",
                "The front struts are MacPherson struts with twin-tube dampers and coil "
                "springs. The top mount carries a bearing so the strut turns with the steering.",
                access="front wheel",
            ),
            C(
                "lower control arm",
                "The front lower control arm locates the wheel carrier through a "
                "ball joint and two rubber bushings that absorb road noise.",
                access="front wheel",
            ),
            C(
                "rear shock absorber",
                "The rear shock absorbers are mounted separately from the springs "
                "on a twist-beam axle.",
                access="rear wheel",
            ),
            C(
                "ride height sensor",
                "The ride height sensor measures body height at the rear axle so "
                "that the headlamp leveling module can correct beam aim.",
                electrical=True,
                access="rear wheel",
            ),
        ),
        (
            S("Front wheel toe (total)", 0.0, 0.3, 0.05, "°"),
            S("Front camber", -1.0, -0.2, 0.1, "°"),
            S("Wheel bolt torque", 110, 140, 10, "Nm"),
        ),
    ),
    System(
        "Steering",
        "ST",
        "C",
        (
            C(
                "steering gear",
                "The steering gear is a rack-and-pinion unit with an electric assist "
                "motor on a second pinion.",
                access="subframe",
            ),
            C(
                "power steering module",
                "The power steering module calculates assist torque from the "
                "torque sensor and vehicle speed and drives the assist motor.",
                electrical=True,
                access="subframe",
            ),
            C(
                "steering angle sensor",
                "The steering angle sensor is an optical sensor in the "
                "clock-spring housing. It must be calibrated after any alignment work.",
                electrical=True,
                access="steering wheel",
            ),
        ),
        (
            S("Steering wheel free play, maximum", 10, 30, 5, "mm"),
            S("Tie rod end nut torque", 40, 60, 5, "Nm"),
        ),
    ),
    System(
        "Charging and Starting",
        "CH",
        "P",
        (
            C(
                "alternator",
                "The alternator is a smart alternator whose output voltage is set by the "
                "engine control module over a LIN link. It charges more during deceleration to save "
                "fuel.",
                electrical=True,
                access="auxiliary drive belt",
            ),
            C(
                "starter motor",
                "The starter motor is a reduction-gear starter engaged by a solenoid. "
                "Start-stop operation uses a reinforced starter with a longer service life.",
                electrical=True,
                access="air filter housing",
            ),
            C(
                "battery sensor",
                "The intelligent battery sensor on the negative terminal measures "
                "current, voltage and temperature to estimate battery state of charge.",
                electrical=True,
                access="battery cover",
            ),
        ),
        (
            S("Charging voltage", 13.8, 14.8, 0.1, "V"),
            S("Battery capacity", 60, 80, 10, "Ah"),
            S("Starter current draw, maximum", 150, 250, 25, "A"),
        ),
    ),
    System(
        "Lighting",
        "LI",
        "B",
        (
            C(
                "headlamp",
                "The headlamps are LED units with separate low-beam, high-beam and daytime "
                "running light modules and an integrated cooling fan.",
                electrical=True,
                access="front bumper cover",
            ),
            C(
                "tail lamp",
                "The tail lamps combine LED stop, tail and turn functions. A lamp outage "
                "is detected by the body control module from the drive current.",
                electrical=True,
                access="trunk trim panel",
            ),
            C(
                "headlamp leveling motor",
                "The leveling motor adjusts the low-beam reflector angle on "
                "commands from the leveling module so that oncoming drivers are not dazzled.",
                electrical=True,
                access="front bumper cover",
            ),
        ),
        (
            S("Headlamp aim, low beam dip at 10 m", 10, 15, 1, "cm"),
            S("LED module supply voltage", 12, 14, 1, "V"),
        ),
    ),
    System(
        "Climate Control",
        "AC",
        "B",
        (
            C(
                "air conditioning compressor",
                "The compressor is a variable-displacement swash-plate "
                "unit with an external control valve. Its displacement follows cooling demand.",
                electrical=True,
                access="auxiliary drive belt",
            ),
            C(
                "refrigerant pressure sensor",
                "The refrigerant pressure sensor on the high-pressure "
                "line protects the system from over-pressure and controls fan speed.",
                electrical=True,
                access="front bumper cover",
            ),
            C(
                "blower motor",
                "The blower motor is controlled by a linear power module that sets fan "
                "speed in fine steps.",
                electrical=True,
                access="glove box",
            ),
            C(
                "cabin air filter",
                "The cabin air filter is an activated-carbon filter that removes "
                "dust, pollen and odours from incoming air.",
                access="glove box",
            ),
        ),
        (
            S("Refrigerant charge (R1234yf)", 420, 520, 10, "g"),
            S("Compressor oil capacity", 90, 130, 10, "mL"),
            S("Cabin air filter interval", 15000, 30000, 5000, "km"),
        ),
    ),
    System(
        "Body and Closures",
        "BO",
        "B",
        (
            C(
                "front bumper cover",
                "The front bumper cover is a painted polypropylene moulding held "
                "by clips and screws to the energy absorber and the fenders.",
                access="radiator grille",
            ),
            C(
                "door lock actuator",
                "Each door lock actuator combines the lock motor and the latch "
                "position switches. The body control module commands locking over a dedicated driver.",
                electrical=True,
                access="door trim panel",
            ),
            C(
                "power window regulator",
                "The power window regulator is a cable-drum regulator with a "
                "motor that has anti-pinch detection from its Hall sensor.",
                electrical=True,
                access="door trim panel",
            ),
            C(
                "side mirror",
                "The exterior mirrors are electrically adjustable and heated, with the "
                "turn signal repeater in the housing.",
                electrical=True,
                access="door trim panel",
            ),
        ),
        (
            S("Door hinge bolt torque", 20, 30, 2, "Nm"),
            S("Hood gap", 3.5, 5.0, 0.5, "mm"),
            S("Door gap", 3.5, 5.0, 0.5, "mm"),
        ),
    ),
    System(
        "Supplemental Restraints",
        "SR",
        "B",
        (
            C(
                "airbag control module",
                "The airbag control module reads the crash sensors and fires "
                "the airbags and belt pretensioners. It stores crash data that cannot be erased.",
                electrical=True,
                access="center console",
            ),
            C(
                "front impact sensor",
                "The front impact sensors are acceleration sensors on the "
                "radiator support that give early warning of a frontal crash.",
                electrical=True,
                access="front bumper cover",
            ),
            C(
                "driver airbag module",
                "The driver airbag module in the steering wheel has a "
                "two-stage inflator fired according to crash severity.",
                electrical=True,
                access="steering wheel",
            ),
        ),
        (
            S("Airbag module bolt torque", 8, 10, 1, "Nm"),
            S("Wait time after battery disconnection", 1, 3, 1, "min"),
        ),
    ),
    System(
        "Wheels and Tires",
        "WT",
        "C",
        (
            C(
                "tire pressure sensor",
                "Each wheel carries a tire pressure sensor on the valve stem "
                "that reports pressure and temperature by radio.",
                electrical=True,
                access="tire",
            ),
            C(
                "wheel bearing",
                "The wheel bearings are sealed hub units with an integrated magnetic "
                "encoder for the wheel speed sensor.",
                access="brake disc",
            ),
            C(
                "spare wheel",
                "The temporary spare wheel is limited to a reduced speed and must not "
                "be used for long distances.",
                access="trunk floor panel",
            ),
        ),
        (
            S("Tire pressure, front (cold)", 2.2, 2.6, 0.1, "bar"),
            S("Tire pressure, rear (cold)", 2.1, 2.5, 0.1, "bar"),
            S("Temporary spare maximum speed", 80, 80, 10, "km/h"),
            S("Minimum tread depth", 1.6, 1.6, 0.1, "mm"),
        ),
    ),
)
