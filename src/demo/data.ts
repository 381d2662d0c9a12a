/**
 * Synthetic patients for the embedded demo and the integration tests. Every person, number and
 * address here is invented. The records are built to exercise each row of SPEC 4's demo table:
 * SSNs and MRNs, telecom and addresses (a restricted ZIP3 among them), a patient over 89, a deceased
 * patient, a VIP chart labelled confidentiality R (labels propagated to its encounters and
 * observations), PSY / PSYTHPN / HIV labelled records, notes, narrative that repeats identifiers,
 * contained resources, claims, coverage and appointments. Care relationships too (policy
 * `relationships`): care teams, encounters, an episode of care, a ward role and a coder's work queue
 * relate some patients to the demo clinician (dr-reyes) and the demo coder (coder-1), and leave
 * others unrelated; `DEMO.relationships` says who is related to whom, via what. And patients'
 * consent directives (policy `consent`): a research opt-out, a restriction of one self-paid visit
 * from payment, a 42 CFR Part 2 consent for a substance use disorder record, and a consent that
 * expired; `DEMO.consents` says what each one does.
 *
 * `DEMO` names the ids and the sensitive strings so tests can assert that a response's bytes never
 * contain them. `demoResources()` builds fresh objects on every call: callers may mutate them.
 */
import type {
  AllergyIntolerance,
  Annotation,
  Appointment,
  CareTeam,
  Claim,
  Coding,
  Condition,
  Consent,
  ConsentProvision,
  Coverage,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  EpisodeOfCare,
  ExplanationOfBenefit,
  Identifier,
  Immunization,
  Location,
  MedicationRequest,
  Meta,
  Observation,
  Organization,
  Patient,
  Practitioner,
  PractitionerRole,
  Procedure,
  Reference,
  Resource,
  Specimen,
  Task,
} from 'fhir/r4.js';

export const CONFIDENTIALITY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
export const ACT_CODE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
export const SSN_SYSTEM = 'http://hl7.org/fhir/sid/us-ssn';
export const MRN_SYSTEM = 'urn:oid:2.16.840.1.113883.3.9999.1.1';
export const MEMBER_ID_SYSTEM = 'urn:oid:2.16.840.1.113883.3.9999.2.1';
const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
const LOINC = 'http://loinc.org';
const SNOMED = 'http://snomed.info/sct';
const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const UCUM = 'http://unitsofmeasure.org';
const ACT_ENCOUNTER = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';
const CONSENT_ACTION = 'http://terminology.hl7.org/CodeSystem/consentaction';

/**
 * Every seeded resource is version 1 at this instant, so seeds are byte-for-byte reproducible; the
 * dates of the encounters that make a care relationship current are the exception (see `recent`).
 */
export const SEED_INSTANT = '2024-06-01T12:00:00.000Z';

export const DEMO = {
  patients: {
    alice: 'pat-alice',
    brian: 'pat-brian',
    vip: 'pat-vip',
    elder: 'pat-elder',
    david: 'pat-david',
    paula: 'pat-paula',
    henry: 'pat-henry',
    grace: 'pat-grace',
  },
  /** Patient display names ("Given Family"); families and givens are listed separately below. */
  names: {
    alice: 'Alice Anderson',
    brian: 'Brian Baker',
    vip: 'Celebrity Vip',
    elder: 'Edith Elderberry',
    david: 'David Dunmore',
    paula: 'Paula Prescott',
    henry: 'Henry Hollis',
    grace: 'Grace Garland',
  },
  families: ['Anderson', 'Baker', 'Vip', 'Elderberry', 'Dunmore', 'Prescott', 'Hollis', 'Garland'],
  ssn: {
    alice: '123-45-6789',
    brian: '234-56-7890',
    vip: '345-67-8901',
    elder: '456-78-9012',
    david: '567-89-0123',
    paula: '678-90-1234',
    henry: '789-01-2345',
    grace: '890-12-3456',
  },
  mrn: {
    alice: 'MRN-100001',
    brian: 'MRN-100002',
    vip: 'MRN-100003',
    elder: 'MRN-100004',
    david: 'MRN-100005',
    paula: 'MRN-100006',
    henry: 'MRN-100007',
    grace: 'MRN-100008',
  },
  /** Patient and relative phone numbers, including Alice's superseded number (only in version 1). */
  phones: {
    alice: '617-555-0101',
    aliceOld: '617-555-0100',
    aliceSpouse: '617-555-0102',
    brian: '603-555-0133',
    vip: '212-555-0199',
    elder: '617-555-0144',
    elderDaughter: '617-555-0145',
    david: '508-555-0155',
    paula: '617-555-0166',
    henry: '617-555-0177',
    grace: '617-555-0188',
    graceMother: '617-555-0189',
  },
  emails: {
    alice: 'alice.anderson@example.org',
    brian: 'brian.baker@example.net',
    vip: 'press-office@celebrity.example',
  },
  /** Names of relatives in Patient.contact. */
  relatives: { aliceSpouse: 'Arthur Anderson', elderDaughter: 'Ellen Elderberry', graceMother: 'Gloria Garland' },
  addresses: {
    aliceLine: '12 Beacon Street',
    aliceCity: 'Boston',
    aliceZip: '02115',
    /** 036xx is one of the Safe Harbor restricted ZIP3 areas: generalizes to 000. */
    brianLine: '4 Covered Bridge Road',
    brianCity: 'Colebrook',
    restrictedZip: '03601',
  },
  birthDates: { alice: '1984-03-14', elder: '1930-05-20', grace: '2015-09-01' },
  deceased: { david: '2023-11-02T08:30:00Z' },
  practitioners: {
    reyes: 'prac-reyes',
    chen: 'prac-chen',
    okafor: 'prac-okafor',
    lab: 'prac-lab',
    coder: 'prac-coder-1',
  },
  practitionerNames: {
    reyes: 'Dr. Maria Reyes',
    chen: 'Dr. David Chen',
    okafor: 'Dr. Ngozi Okafor',
    lab: 'Sam Tran',
    coder: 'Jordan Park',
  },
  organizations: { hospital: 'org-hospital', payer: 'org-payer' },
  /**
   * Care relationships and assignments, as the shipped policy's sources read them. The demo
   * clinician (token sub `dr-reyes`, fhirUser `Practitioner/prac-reyes`) is related, for TREAT, to:
   * Alice and the VIP (active care teams), Elder (care manager of her active episode of care), Grace
   * (admitted to the ward of dr-reyes's active role), Henry (an encounter that ended days ago) and
   * Paula (an encounter in progress). Not to Brian (nothing at all) nor David (only a care team that
   * is inactive); her 2024 encounters with Alice, Elder and Henry ended too long ago to count alone.
   * The demo coder (sub `coder-1`, fhirUser `Practitioner/prac-coder-1`) has, for HOPERAT, Alice
   * (Task.for), Elder (Task.focus an encounter) and Paula (Task.focus a claim) in an open work queue;
   * Brian's task is completed and does not count; nobody else is assigned.
   */
  relationships: {
    fhirUsers: { clinician: 'Practitioner/prac-reyes', coder: 'Practitioner/prac-coder-1' },
    careTeams: { alice: 'ct-alice', vip: 'ct-vip', davidInactive: 'ct-david' },
    /** The ward's Location, dr-reyes's PractitionerRole there, and Grace's stay on it (in progress). */
    ward: 'loc-ward-4b',
    wardRole: 'role-reyes-ward',
    wardEncounter: 'enc-grace-ward',
    /** dr-reyes's encounters that count: Henry's ended days ago, Paula's is in progress. */
    recentEncounter: 'enc-henry-2',
    currentEncounter: 'enc-paula-2',
    episode: 'eoc-elder',
    tasks: { alice: 'task-code-alice', elderEncounter: 'task-code-elder', paulaClaim: 'task-code-paula', brianCompleted: 'task-code-brian' },
    /** dr-reyes's related patients by key, and the source that relates each. */
    clinicianRelated: { alice: 'care-team', vip: 'care-team', elder: 'episode', grace: 'department', henry: 'encounter', paula: 'encounter' },
    clinicianUnrelated: ['brian', 'david'],
    coderAssigned: ['alice', 'elder', 'paula'],
    coderUnassigned: ['brian', 'vip', 'david', 'henry', 'grace'],
  },
  /**
   * Patients' consent directives (active, scope patient-privacy), as the shipped policy's `consent`
   * section enforces them:
   * - `researchOptOut`: Henry opts out of research (OPTIN with a nested deny for HRESCH): the
   *   researcher gets none of his records, everyone else is unaffected.
   * - `payerRestriction`: Brian paid one visit in full himself and restricted it from payment
   *   (HIPAA 164.522(a)(1)(vi): a deny for HPAYMT on the data related to that Encounter): billing
   *   sees neither the Encounter nor what references it (its Claim, its Condition) nor the self-pay
   *   Coverage (named too: it references no Encounter), and still sees his other encounter, claims
   *   data and insurance coverage.
   * - `part2`: Paula's opioid use disorder Condition is labelled SUD (42 CFR Part 2). Her consent
   *   (OPTIN; a nested deny for label SUD, and inside it a permit for Dr. Reyes and TREAT: an
   *   exception to the exception) releases it to dr-reyes for treatment, with the redisclosure
   *   notice, and to nobody else (the coder's data set grants SUD labels, the consent does not);
   *   the rest of her chart is not restricted.
   * - `expired`: Edith's deny-all consent (OPTOUT) was in force during 2023 only: no effect now.
   */
  consents: {
    researchOptOut: { id: 'consent-henry-research', patient: 'henry' },
    payerRestriction: {
      id: 'consent-brian-selfpay',
      patient: 'brian',
      encounter: 'enc-brian-selfpay',
      condition: 'cond-brian-selfpay',
      claim: 'claim-brian-selfpay',
      /** The self-pay Coverage the Claim names: it references no Encounter, so the consent names it as well. */
      coverage: 'cov-brian-selfpay',
      /** Brian's encounter that the restriction leaves alone. */
      otherEncounter: 'enc-brian-1',
    },
    part2: { id: 'consent-paula-part2', patient: 'paula', condition: 'cond-paula-sud', recipient: 'Practitioner/prac-reyes', purpose: 'TREAT' },
    expired: { id: 'consent-elder-2023', patient: 'elder', period: { start: '2023-01-01', end: '2023-12-31' } },
  },
  memberIds: { alice: 'BSHP-778812', brian: 'BSHP-778813', paula: 'BSHP-778814' },
  /** The restricted chart and what is labelled with it. */
  vip: {
    patient: 'pat-vip',
    encounter: 'enc-vip-1',
    observation: 'obs-vip-hr',
    condition: 'cond-vip-fracture',
  },
  psyCondition: 'cond-psy',
  psythpnCondition: 'cond-psythpn',
  hivCondition: 'cond-hiv',
  hypertension: 'cond-alice-htn',
  elderAgeCondition: 'cond-elder-dementia',
  elderAgeObservation: 'obs-elder-age',
  containedObservation: 'obs-alice-glucose',
  documentReference: 'doc-alice-note',
  psyClaim: 'claim-paula-psy',
  /** Free text in notes (Annotation.text, processNote): never released to billing or research. */
  notes: {
    hypertension: 'Home readings reviewed with Alice Anderson; call 617-555-0101 if above 160/100.',
    psy: 'Low mood for six weeks after job loss; started sertraline.',
    psythpn: 'Session 4: patient discussed childhood trauma and conflict with spouse in detail.',
    hiv: 'Viral load undetectable on current regimen.',
    procedure: 'Two small polyps removed; pathology pending.',
    eob: 'Adjusted for out-of-network anesthesia. Member Alice Anderson notified by phone.',
    medication: 'Take in the morning. Check potassium in two weeks.',
    sud: 'Stable on buprenorphine-naloxone; weekly counselling at the outpatient program.',
  },
  /** Plain text inside the DocumentReference attachment (base64 in the resource). */
  documentText: 'Progress note. Blood pressure improved on lisinopril 10 mg daily. Follow up in three months.',
} as const;

const P = DEMO.patients;

function meta(...security: Coding[]): Meta {
  return security.length > 0
    ? { versionId: '1', lastUpdated: SEED_INSTANT, security }
    : { versionId: '1', lastUpdated: SEED_INSTANT };
}

const label = {
  restricted: (): Coding => ({ system: CONFIDENTIALITY_SYSTEM, code: 'R', display: 'restricted' }),
  normal: (): Coding => ({ system: CONFIDENTIALITY_SYSTEM, code: 'N', display: 'normal' }),
  psy: (): Coding => ({ system: ACT_CODE_SYSTEM, code: 'PSY', display: 'psychiatry disorder information sensitivity' }),
  psythpn: (): Coding => ({ system: ACT_CODE_SYSTEM, code: 'PSYTHPN', display: 'psychotherapy note information sensitivity' }),
  hiv: (): Coding => ({ system: ACT_CODE_SYSTEM, code: 'HIV', display: 'HIV/AIDS information sensitivity' }),
  sud: (): Coding => ({ system: ACT_CODE_SYSTEM, code: 'SUD', display: 'substance use disorder information sensitivity' }),
};

function patientRef(key: keyof typeof P): Reference {
  return { reference: `Patient/${P[key]}`, display: DEMO.names[key] };
}

function practitionerRef(key: keyof typeof DEMO.practitioners): Reference {
  return { reference: `Practitioner/${DEMO.practitioners[key]}`, display: DEMO.practitionerNames[key] };
}

const hospitalRef = (): Reference => ({ reference: 'Organization/org-hospital', display: 'Beacon General Hospital' });
const payerRef = (): Reference => ({ reference: 'Organization/org-payer', display: 'Bay State Health Plan' });

function note(text: string, author?: keyof typeof DEMO.practitioners): Annotation[] {
  return [
    author
      ? { authorReference: practitionerRef(author), time: '2024-02-10T15:00:00Z', text }
      : { authorString: 'Front desk', time: '2024-02-10T15:00:00Z', text },
  ];
}

function cc(system: string, code: string, display: string) {
  return { coding: [{ system, code, display }], text: display };
}

function ssnIdentifier(value: string): Identifier {
  return {
    use: 'official',
    type: { coding: [{ system: V2_0203, code: 'SS', display: 'Social Security number' }] },
    system: SSN_SYSTEM,
    value,
  };
}

function mrnIdentifier(value: string): Identifier {
  return {
    use: 'usual',
    type: { coding: [{ system: V2_0203, code: 'MR', display: 'Medical record number' }] },
    system: MRN_SYSTEM,
    value,
    assigner: hospitalRef(),
  };
}

function narrative(html: string) {
  return { status: 'generated' as const, div: `<div xmlns="http://www.w3.org/1999/xhtml">${html}</div>` };
}

interface PersonSpec {
  key: keyof typeof P;
  given: string[];
  family: string;
  gender: Patient['gender'];
  birthDate: string;
  phone: string;
  email?: string;
  line: string;
  city: string;
  state: string;
  zip: string;
  gp: keyof typeof DEMO.practitioners;
  extra?: Partial<Patient>;
}

function patient(spec: PersonSpec): Patient {
  const name = `${spec.given.join(' ')} ${spec.family}`;
  const telecom: Patient['telecom'] = [{ system: 'phone', value: spec.phone, use: 'home' }];
  if (spec.email) telecom.push({ system: 'email', value: spec.email });
  return {
    resourceType: 'Patient',
    id: P[spec.key],
    meta: meta(),
    // Narrative repeats the structured identifiers, as EHR-generated narrative does: a redacting
    // proxy that keeps `text` after removing `name` or the SSN leaks them anyway.
    text: narrative(
      `<p>${name}, born ${spec.birthDate}, SSN ${DEMO.ssn[spec.key]}, MRN ${DEMO.mrn[spec.key]}, phone ${spec.phone}, ` +
        `${spec.line}, ${spec.city} ${spec.state} ${spec.zip}</p>`,
    ),
    identifier: [mrnIdentifier(DEMO.mrn[spec.key]), ssnIdentifier(DEMO.ssn[spec.key])],
    active: true,
    name: [{ use: 'official', family: spec.family, given: spec.given }],
    telecom,
    gender: spec.gender,
    birthDate: spec.birthDate,
    address: [
      { use: 'home', line: [spec.line], city: spec.city, state: spec.state, postalCode: spec.zip, country: 'US' },
    ],
    generalPractitioner: [practitionerRef(spec.gp)],
    managingOrganization: hospitalRef(),
    ...spec.extra,
  };
}

function patients(): Patient[] {
  const alice = patient({
    key: 'alice',
    given: ['Alice', 'May'],
    family: 'Anderson',
    gender: 'female',
    birthDate: DEMO.birthDates.alice,
    phone: DEMO.phones.alice,
    email: DEMO.emails.alice,
    line: DEMO.addresses.aliceLine,
    city: DEMO.addresses.aliceCity,
    state: 'MA',
    zip: DEMO.addresses.aliceZip,
    gp: 'reyes',
    extra: {
      maritalStatus: cc('http://terminology.hl7.org/CodeSystem/v3-MaritalStatus', 'M', 'Married'),
      contact: [
        {
          relationship: [cc('http://terminology.hl7.org/CodeSystem/v2-0131', 'N', 'Next-of-Kin')],
          name: { family: 'Anderson', given: ['Arthur'] },
          telecom: [{ system: 'phone', value: DEMO.phones.aliceSpouse, use: 'mobile' }],
        },
      ],
    },
  });
  return [
    alice,
    patient({
      key: 'brian',
      given: ['Brian'],
      family: 'Baker',
      gender: 'male',
      birthDate: '1975-07-02',
      phone: DEMO.phones.brian,
      email: DEMO.emails.brian,
      line: DEMO.addresses.brianLine,
      city: DEMO.addresses.brianCity,
      state: 'NH',
      zip: DEMO.addresses.restrictedZip,
      gp: 'chen',
    }),
    {
      ...patient({
        key: 'vip',
        given: ['Celebrity'],
        family: 'Vip',
        gender: 'female',
        birthDate: '1979-12-24',
        phone: DEMO.phones.vip,
        email: DEMO.emails.vip,
        line: '1 Hollywood Hills Drive',
        city: 'Los Angeles',
        state: 'CA',
        zip: '90068',
        gp: 'chen',
      }),
      meta: meta(label.restricted()),
    },
    patient({
      key: 'elder',
      given: ['Edith'],
      family: 'Elderberry',
      gender: 'female',
      birthDate: DEMO.birthDates.elder,
      phone: DEMO.phones.elder,
      line: '88 Commonwealth Avenue',
      city: 'Boston',
      state: 'MA',
      zip: '02116',
      gp: 'reyes',
      extra: {
        contact: [
          {
            relationship: [cc('http://terminology.hl7.org/CodeSystem/v2-0131', 'C', 'Emergency Contact')],
            name: { family: 'Elderberry', given: ['Ellen'] },
            telecom: [{ system: 'phone', value: DEMO.phones.elderDaughter }],
          },
        ],
      },
    }),
    patient({
      key: 'david',
      given: ['David'],
      family: 'Dunmore',
      gender: 'male',
      birthDate: '1950-04-11',
      phone: DEMO.phones.david,
      line: '17 Harbor Lane',
      city: 'Worcester',
      state: 'MA',
      zip: '01609',
      gp: 'chen',
      extra: { active: false, deceasedDateTime: DEMO.deceased.david },
    }),
    patient({
      key: 'paula',
      given: ['Paula'],
      family: 'Prescott',
      gender: 'female',
      birthDate: '1991-01-30',
      phone: DEMO.phones.paula,
      line: '230 Huntington Avenue',
      city: 'Boston',
      state: 'MA',
      zip: '02115',
      gp: 'okafor',
    }),
    patient({
      key: 'henry',
      given: ['Henry'],
      family: 'Hollis',
      gender: 'male',
      birthDate: '1968-08-08',
      phone: DEMO.phones.henry,
      line: '9 Tremont Street',
      city: 'Boston',
      state: 'MA',
      zip: '02108',
      gp: 'reyes',
    }),
    patient({
      key: 'grace',
      given: ['Grace'],
      family: 'Garland',
      gender: 'female',
      birthDate: DEMO.birthDates.grace,
      phone: DEMO.phones.grace,
      line: '5 Elm Street',
      city: 'Cambridge',
      state: 'MA',
      zip: '02139',
      gp: 'reyes',
      extra: {
        contact: [
          {
            relationship: [cc('http://terminology.hl7.org/CodeSystem/v2-0131', 'N', 'Next-of-Kin')],
            name: { family: 'Garland', given: ['Gloria'] },
            telecom: [{ system: 'phone', value: DEMO.phones.graceMother }],
          },
        ],
      },
    }),
  ];
}

function practitioners(): Practitioner[] {
  const mk = (key: keyof typeof DEMO.practitioners, given: string, family: string, phone: string, npi: string) => ({
    resourceType: 'Practitioner' as const,
    id: DEMO.practitioners[key],
    meta: meta(),
    identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: npi }],
    active: true,
    name: [{ family, given: [given], prefix: key === 'lab' || key === 'coder' ? [] : ['Dr.'] }],
    telecom: [
      { system: 'phone' as const, value: phone, use: 'work' as const },
      { system: 'email' as const, value: `${given.toLowerCase()}.${family.toLowerCase()}@beacon-general.example` },
    ],
  });
  return [
    mk('reyes', 'Maria', 'Reyes', '617-555-0201', '1234567893'),
    mk('chen', 'David', 'Chen', '617-555-0202', '1245319599'),
    mk('okafor', 'Ngozi', 'Okafor', '617-555-0203', '1336184216'),
    mk('lab', 'Sam', 'Tran', '617-555-0204', '1184726591'),
    mk('coder', 'Jordan', 'Park', '617-555-0206', '1093847561'),
  ];
}

function organizations(): Organization[] {
  return [
    {
      resourceType: 'Organization',
      id: 'org-hospital',
      meta: meta(),
      identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1902809001' }],
      active: true,
      type: [cc('http://terminology.hl7.org/CodeSystem/organization-type', 'prov', 'Healthcare Provider')],
      name: 'Beacon General Hospital',
      telecom: [{ system: 'phone', value: '617-555-0300' }],
      address: [{ line: ['1 Hospital Plaza'], city: 'Boston', state: 'MA', postalCode: '02114', country: 'US' }],
    },
    {
      resourceType: 'Organization',
      id: 'org-payer',
      meta: meta(),
      active: true,
      type: [cc('http://terminology.hl7.org/CodeSystem/organization-type', 'pay', 'Payer')],
      name: 'Bay State Health Plan',
      telecom: [{ system: 'phone', value: '800-555-0400' }],
    },
  ];
}

interface EncounterSpec {
  id: string;
  patient: keyof typeof P;
  practitioner: keyof typeof DEMO.practitioners;
  start: string;
  /** Absent: the encounter is in progress. */
  end?: string;
  reason: ReturnType<typeof cc>;
  diagnosis?: string;
  classCode?: 'AMB' | 'EMER' | 'IMP';
  /** Where the patient is (a ward): `Location/<id>`. */
  location?: string;
  security?: Coding[];
}

function encounter(s: EncounterSpec): Encounter {
  const classCode = s.classCode ?? 'AMB';
  const classDisplay = { AMB: 'ambulatory', EMER: 'emergency', IMP: 'inpatient encounter' }[classCode];
  return {
    resourceType: 'Encounter',
    id: s.id,
    meta: meta(...(s.security ?? [])),
    status: s.end === undefined ? 'in-progress' : 'finished',
    class: { system: ACT_ENCOUNTER, code: classCode, display: classDisplay },
    type: [cc(SNOMED, '185349003', 'Encounter for check up')],
    subject: patientRef(s.patient),
    participant: [
      {
        type: [cc('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'ATND', 'attender')],
        individual: practitionerRef(s.practitioner),
      },
    ],
    period: s.end === undefined ? { start: s.start } : { start: s.start, end: s.end },
    reasonCode: [s.reason],
    ...(s.diagnosis ? { diagnosis: [{ condition: { reference: `Condition/${s.diagnosis}` }, rank: 1 }] } : {}),
    ...(s.location ? { location: [{ location: { reference: s.location }, status: 'active' as const }] } : {}),
    serviceProvider: hospitalRef(),
  };
}

/**
 * `days` days before `now`'s UTC day, at `time` (UTC). A care relationship read from encounters
 * counts while they are current or recently ended, so these dates follow the clock; by the day, so
 * two seeds on the same day are identical.
 */
function recent(now: Date, days: number, time: string): string {
  const day = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) - days * 86_400_000);
  return `${day.toISOString().slice(0, 10)}T${time}Z`;
}

function encounters(now: Date): Encounter[] {
  const R = DEMO.relationships;
  return [
    encounter({
      id: 'enc-alice-1',
      patient: 'alice',
      practitioner: 'reyes',
      start: '2024-02-10T14:00:00Z',
      end: '2024-02-10T14:40:00Z',
      reason: cc(SNOMED, '38341003', 'Hypertensive disorder'),
      diagnosis: DEMO.hypertension,
    }),
    encounter({
      id: 'enc-alice-2',
      patient: 'alice',
      practitioner: 'chen',
      start: '2024-04-22T09:00:00Z',
      end: '2024-04-22T11:30:00Z',
      reason: cc(SNOMED, '73761001', 'Colonoscopy'),
    }),
    encounter({
      id: DEMO.vip.encounter,
      patient: 'vip',
      practitioner: 'chen',
      start: '2024-03-03T22:10:00Z',
      end: '2024-03-04T02:00:00Z',
      reason: cc(SNOMED, '263204007', 'Fracture of wrist'),
      diagnosis: DEMO.vip.condition,
      classCode: 'EMER',
      // EHRs propagate a chart's confidentiality to everything recorded on it.
      security: [label.restricted()],
    }),
    encounter({
      id: 'enc-paula-1',
      patient: 'paula',
      practitioner: 'okafor',
      start: '2024-01-15T10:00:00Z',
      end: '2024-01-15T10:50:00Z',
      reason: cc(SNOMED, '35489007', 'Depressive disorder'),
      diagnosis: DEMO.psyCondition,
      security: [label.psy()],
    }),
    encounter({
      id: 'enc-henry-1',
      patient: 'henry',
      practitioner: 'reyes',
      start: '2024-05-05T13:00:00Z',
      end: '2024-05-05T13:30:00Z',
      reason: cc(SNOMED, '86406008', 'Human immunodeficiency virus infection'),
      diagnosis: DEMO.hivCondition,
      security: [label.hiv()],
    }),
    encounter({
      id: 'enc-elder-1',
      patient: 'elder',
      practitioner: 'reyes',
      start: '2024-02-20T10:00:00Z',
      end: '2024-02-20T10:30:00Z',
      reason: cc(SNOMED, '52448006', 'Dementia'),
      diagnosis: DEMO.elderAgeCondition,
    }),
    encounter({
      id: 'enc-brian-1',
      patient: 'brian',
      practitioner: 'chen',
      start: '2024-03-12T08:00:00Z',
      end: '2024-03-12T08:20:00Z',
      reason: cc(SNOMED, '44054006', 'Diabetes mellitus type 2'),
      diagnosis: 'cond-brian-dm2',
    }),
    // Paid in full by Brian himself, and restricted from payment (DEMO.consents.payerRestriction).
    encounter({
      id: DEMO.consents.payerRestriction.encounter,
      patient: 'brian',
      practitioner: 'chen',
      start: '2024-04-08T16:00:00Z',
      end: '2024-04-08T16:25:00Z',
      reason: cc(SNOMED, '860914002', 'Erectile dysfunction'),
      diagnosis: DEMO.consents.payerRestriction.condition,
    }),
    // The encounters that relate patients to dr-reyes now: one ended days ago, one in progress.
    encounter({
      id: R.recentEncounter,
      patient: 'henry',
      practitioner: 'reyes',
      start: recent(now, 10, '14:00:00'),
      end: recent(now, 10, '14:30:00'),
      reason: cc(SNOMED, '390906007', 'Follow-up encounter'),
    }),
    encounter({
      id: R.currentEncounter,
      patient: 'paula',
      practitioner: 'reyes',
      start: recent(now, 1, '09:00:00'),
      reason: cc(SNOMED, '68566005', 'Urinary tract infectious disease'),
      classCode: 'EMER',
    }),
    // Admitted to the ward dr-reyes works on (her PractitionerRole), under another attending.
    encounter({
      id: R.wardEncounter,
      patient: 'grace',
      practitioner: 'chen',
      start: recent(now, 2, '18:00:00'),
      reason: cc(SNOMED, '233604007', 'Pneumonia'),
      classCode: 'IMP',
      location: `Location/${R.ward}`,
    }),
  ];
}

/**
 * Where dr-reyes works and whom she cares for (the shipped policy's relationship sources): care
 * teams, an episode of care she manages, her role on a ward, and the coder's work queue.
 */
function careRelationships(): Resource[] {
  const R = DEMO.relationships;
  const careTeam = (id: string, key: keyof typeof P, status: CareTeam['status'], name: string, members: Array<keyof typeof DEMO.practitioners>, extra: Partial<CareTeam> = {}): CareTeam => ({
    resourceType: 'CareTeam',
    id,
    meta: meta(...(key === 'vip' ? [label.restricted()] : [])),
    status,
    name,
    subject: patientRef(key),
    participant: members.map((m) => ({
      role: [cc(SNOMED, m === 'reyes' ? '446050000' : '309343006', m === 'reyes' ? 'Primary care physician' : 'Physician')],
      member: practitionerRef(m),
    })),
    managingOrganization: [hospitalRef()],
    ...extra,
  });
  const ward: Location = {
    resourceType: 'Location',
    id: R.ward,
    meta: meta(),
    status: 'active',
    name: 'Ward 4B (pediatrics)',
    mode: 'instance',
    physicalType: cc('http://terminology.hl7.org/CodeSystem/location-physical-type', 'wa', 'Ward'),
    managingOrganization: hospitalRef(),
  };
  const role: PractitionerRole = {
    resourceType: 'PractitionerRole',
    id: R.wardRole,
    meta: meta(),
    active: true,
    period: { start: '2024-01-01' },
    practitioner: practitionerRef('reyes'),
    // The ward, not the hospital: a role naming Organization/org-hospital would relate her to every
    // patient admitted anywhere in it.
    location: [{ reference: `Location/${R.ward}`, display: 'Ward 4B (pediatrics)' }],
    code: [cc('http://terminology.hl7.org/CodeSystem/practitioner-role', 'doctor', 'Doctor')],
  };
  const episode: EpisodeOfCare = {
    resourceType: 'EpisodeOfCare',
    id: R.episode,
    meta: meta(),
    status: 'active',
    type: [cc('http://terminology.hl7.org/CodeSystem/episodeofcare-type', 'hacc', 'Home and Community Care')],
    diagnosis: [{ condition: { reference: `Condition/${DEMO.elderAgeCondition}` }, rank: 1 }],
    patient: patientRef('elder'),
    managingOrganization: hospitalRef(),
    period: { start: '2024-02-20' },
    careManager: practitionerRef('reyes'),
  };
  const task = (id: string, status: Task['status'], about: Pick<Task, 'for' | 'focus'>, authoredOn: string): Task => ({
    resourceType: 'Task',
    id,
    meta: meta(),
    status,
    intent: 'order',
    code: { text: 'Code the encounter' },
    description: 'Assign diagnosis and procedure codes',
    ...about,
    authoredOn,
    ...(status === 'completed' ? { lastModified: '2024-05-02T16:00:00Z' } : {}),
    requester: hospitalRef(),
    owner: practitionerRef('coder'),
  });
  return [
    careTeam(R.careTeams.alice, 'alice', 'active', 'Hypertension care', ['reyes'], { period: { start: '2024-02-10' } }),
    careTeam(R.careTeams.vip, 'vip', 'active', 'Fracture follow-up', ['chen', 'reyes'], { period: { start: '2024-03-04' } }),
    careTeam(R.careTeams.davidInactive, 'david', 'inactive', 'Home care', ['reyes'], {
      period: { start: '2023-06-01', end: DEMO.deceased.david.slice(0, 10) },
    }),
    ward,
    role,
    episode,
    task(R.tasks.alice, 'requested', { for: patientRef('alice') }, '2024-05-20T09:00:00Z'),
    task(R.tasks.elderEncounter, 'in-progress', { focus: { reference: 'Encounter/enc-elder-1' } }, '2024-05-21T09:00:00Z'),
    task(R.tasks.paulaClaim, 'ready', { focus: { reference: `Claim/${DEMO.psyClaim}` } }, '2024-05-22T09:00:00Z'),
    task(R.tasks.brianCompleted, 'completed', { for: patientRef('brian') }, '2024-05-01T09:00:00Z'),
  ];
}

interface ConditionSpec {
  id: string;
  patient: keyof typeof P;
  code: ReturnType<typeof cc>;
  icd: string;
  onset: Partial<Condition>;
  recorded: string;
  encounter?: string;
  noteText?: string;
  author?: keyof typeof DEMO.practitioners;
  security?: Coding[];
}

function condition(s: ConditionSpec): Condition {
  const code = { ...s.code, coding: [...s.code.coding, { system: ICD10, code: s.icd }] };
  return {
    resourceType: 'Condition',
    id: s.id,
    meta: meta(...(s.security ?? [])),
    clinicalStatus: cc('http://terminology.hl7.org/CodeSystem/condition-clinical', 'active', 'Active'),
    verificationStatus: cc('http://terminology.hl7.org/CodeSystem/condition-ver-status', 'confirmed', 'Confirmed'),
    category: [cc('http://terminology.hl7.org/CodeSystem/condition-category', 'encounter-diagnosis', 'Encounter Diagnosis')],
    code,
    subject: patientRef(s.patient),
    ...(s.encounter ? { encounter: { reference: `Encounter/${s.encounter}` } } : {}),
    ...s.onset,
    recordedDate: s.recorded,
    ...(s.author ? { recorder: practitionerRef(s.author) } : {}),
    ...(s.noteText ? { note: note(s.noteText, s.author) } : {}),
  };
}

function conditions(): Condition[] {
  return [
    condition({
      id: DEMO.hypertension,
      patient: 'alice',
      code: cc(SNOMED, '38341003', 'Hypertensive disorder'),
      icd: 'I10',
      onset: { onsetDateTime: '2019-06-01' },
      recorded: '2024-02-10',
      encounter: 'enc-alice-1',
      noteText: DEMO.notes.hypertension,
      author: 'reyes',
    }),
    condition({
      id: DEMO.psyCondition,
      patient: 'paula',
      code: cc(SNOMED, '370143000', 'Major depressive disorder'),
      icd: 'F32.1',
      onset: { onsetDateTime: '2023-11-20' },
      recorded: '2024-01-15',
      encounter: 'enc-paula-1',
      noteText: DEMO.notes.psy,
      author: 'okafor',
      security: [label.psy()],
    }),
    condition({
      // Psychotherapy notes get extra protection under HIPAA 164.508(a)(2); coders may not see them.
      id: DEMO.psythpnCondition,
      patient: 'paula',
      code: cc(SNOMED, '47505003', 'Posttraumatic stress disorder'),
      icd: 'F43.10',
      onset: { onsetDateTime: '2024-02-01' },
      recorded: '2024-02-12',
      encounter: 'enc-paula-1',
      noteText: DEMO.notes.psythpn,
      author: 'okafor',
      security: [label.psy(), label.psythpn()],
    }),
    condition({
      id: DEMO.hivCondition,
      patient: 'henry',
      code: cc(SNOMED, '86406008', 'Human immunodeficiency virus infection'),
      icd: 'B20',
      onset: { onsetDateTime: '2015-03-10' },
      recorded: '2024-05-05',
      encounter: 'enc-henry-1',
      noteText: DEMO.notes.hiv,
      author: 'reyes',
      security: [label.hiv()],
    }),
    condition({
      id: DEMO.elderAgeCondition,
      patient: 'elder',
      code: cc(SNOMED, '52448006', 'Dementia'),
      icd: 'F03.90',
      // An age over 89 is itself an identifier under Safe Harbor.
      onset: { onsetAge: { value: 91, unit: 'years', system: UCUM, code: 'a' } },
      recorded: '2024-02-20',
      encounter: 'enc-elder-1',
      author: 'reyes',
    }),
    condition({
      id: DEMO.vip.condition,
      patient: 'vip',
      code: cc(SNOMED, '263204007', 'Fracture of wrist'),
      icd: 'S62.109A',
      onset: { onsetDateTime: '2024-03-03' },
      recorded: '2024-03-04',
      encounter: DEMO.vip.encounter,
      author: 'chen',
      security: [label.restricted()],
    }),
    condition({
      id: 'cond-brian-dm2',
      patient: 'brian',
      code: cc(SNOMED, '44054006', 'Diabetes mellitus type 2'),
      icd: 'E11.9',
      onset: { onsetDateTime: '2018-01-01' },
      recorded: '2024-03-12',
      encounter: 'enc-brian-1',
      author: 'chen',
    }),
    condition({
      id: DEMO.consents.payerRestriction.condition,
      patient: 'brian',
      code: cc(SNOMED, '860914002', 'Erectile dysfunction'),
      icd: 'N52.9',
      onset: { onsetDateTime: '2024-03-01' },
      recorded: '2024-04-08',
      encounter: DEMO.consents.payerRestriction.encounter,
      author: 'chen',
    }),
    condition({
      // 42 CFR Part 2: released only under a consent naming the recipient (DEMO.consents.part2).
      id: DEMO.consents.part2.condition,
      patient: 'paula',
      code: cc(SNOMED, '75544000', 'Opioid dependence'),
      icd: 'F11.20',
      onset: { onsetDateTime: '2023-08-01' },
      recorded: '2024-01-15',
      encounter: 'enc-paula-1',
      noteText: DEMO.notes.sud,
      author: 'okafor',
      security: [label.sud()],
    }),
  ];
}

function vitals(): Observation[] {
  const vitalSigns = [
    { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] },
  ];
  const laboratory = [
    { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] },
  ];
  const specimen: Specimen = {
    resourceType: 'Specimen',
    id: 'spec1',
    type: cc(SNOMED, '122555007', 'Venous blood specimen'),
    subject: { reference: `Patient/${P.alice}`, display: DEMO.names.alice },
    collection: { collectedDateTime: '2024-02-11T07:45:00Z', collector: { reference: '#phleb' } },
  };
  const phlebotomist: Practitioner = {
    resourceType: 'Practitioner',
    id: 'phleb',
    name: [{ family: 'Quill', given: ['Penny'] }],
    telecom: [{ system: 'phone', value: '617-555-0205' }],
  };
  return [
    {
      resourceType: 'Observation',
      id: 'obs-alice-bp',
      meta: meta(),
      status: 'final',
      category: vitalSigns,
      code: cc(LOINC, '85354-9', 'Blood pressure panel with all children optional'),
      subject: patientRef('alice'),
      encounter: { reference: 'Encounter/enc-alice-1' },
      effectiveDateTime: '2024-02-10T14:10:00Z',
      performer: [practitionerRef('reyes')],
      component: [
        {
          code: cc(LOINC, '8480-6', 'Systolic blood pressure'),
          valueQuantity: { value: 142, unit: 'mmHg', system: UCUM, code: 'mm[Hg]' },
        },
        {
          code: cc(LOINC, '8462-4', 'Diastolic blood pressure'),
          valueQuantity: { value: 91, unit: 'mmHg', system: UCUM, code: 'mm[Hg]' },
        },
      ],
    },
    {
      resourceType: 'Observation',
      id: 'obs-alice-weight',
      meta: meta(),
      status: 'final',
      category: vitalSigns,
      code: cc(LOINC, '29463-7', 'Body weight'),
      subject: patientRef('alice'),
      encounter: { reference: 'Encounter/enc-alice-1' },
      effectiveDateTime: '2024-02-10T14:05:00Z',
      performer: [practitionerRef('reyes')],
      valueQuantity: { value: 68.2, unit: 'kg', system: UCUM, code: 'kg' },
    },
    {
      resourceType: 'Observation',
      id: 'obs-alice-hba1c',
      meta: meta(),
      status: 'final',
      category: laboratory,
      code: cc(LOINC, '4548-4', 'Hemoglobin A1c/Hemoglobin.total in Blood'),
      subject: patientRef('alice'),
      effectiveDateTime: '2024-02-11T08:00:00Z',
      issued: '2024-02-11T16:00:00.000Z',
      performer: [practitionerRef('lab')],
      valueQuantity: { value: 5.9, unit: '%', system: UCUM, code: '%' },
    },
    {
      // Contained resources are part of the container (dom-5: no labels of their own): a redactor
      // must walk into them, and names in them are the container's PHI.
      resourceType: 'Observation',
      id: DEMO.containedObservation,
      meta: meta(),
      contained: [specimen, phlebotomist],
      status: 'final',
      category: laboratory,
      code: cc(LOINC, '2345-7', 'Glucose [Mass/volume] in Serum or Plasma'),
      subject: patientRef('alice'),
      effectiveDateTime: '2024-02-11T07:45:00Z',
      performer: [{ reference: '#phleb', display: 'Penny Quill' }],
      specimen: { reference: '#spec1' },
      valueQuantity: { value: 104, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
    },
    {
      resourceType: 'Observation',
      id: DEMO.vip.observation,
      meta: meta(label.restricted()),
      status: 'final',
      category: vitalSigns,
      code: cc(LOINC, '8867-4', 'Heart rate'),
      subject: patientRef('vip'),
      encounter: { reference: `Encounter/${DEMO.vip.encounter}` },
      effectiveDateTime: '2024-03-03T22:15:00Z',
      performer: [practitionerRef('chen')],
      valueQuantity: { value: 88, unit: 'beats/minute', system: UCUM, code: '/min' },
    },
    {
      resourceType: 'Observation',
      id: DEMO.elderAgeObservation,
      meta: meta(),
      status: 'final',
      code: cc(LOINC, '30525-0', 'Age'),
      subject: patientRef('elder'),
      encounter: { reference: 'Encounter/enc-elder-1' },
      effectiveDateTime: '2024-02-20T10:00:00Z',
      valueQuantity: { value: 93, unit: 'years', system: UCUM, code: 'a' },
    },
    {
      resourceType: 'Observation',
      id: 'obs-brian-glucose',
      meta: meta(),
      status: 'final',
      category: laboratory,
      code: cc(LOINC, '2345-7', 'Glucose [Mass/volume] in Serum or Plasma'),
      subject: patientRef('brian'),
      encounter: { reference: 'Encounter/enc-brian-1' },
      effectiveDateTime: '2024-03-12T08:05:00Z',
      performer: [practitionerRef('lab')],
      valueQuantity: { value: 162, unit: 'mg/dL', system: UCUM, code: 'mg/dL' },
    },
  ];
}

function otherClinical(): Resource[] {
  const procedure: Procedure = {
    resourceType: 'Procedure',
    id: 'proc-alice-colonoscopy',
    meta: meta(),
    status: 'completed',
    code: cc(SNOMED, '73761001', 'Colonoscopy'),
    subject: patientRef('alice'),
    encounter: { reference: 'Encounter/enc-alice-2' },
    performedDateTime: '2024-04-22T10:00:00Z',
    performer: [{ actor: practitionerRef('chen') }],
    note: note(DEMO.notes.procedure, 'chen'),
  };
  const psychotherapy: Procedure = {
    resourceType: 'Procedure',
    id: 'proc-paula-therapy',
    meta: meta(label.psy()),
    status: 'completed',
    code: cc(SNOMED, '75516001', 'Psychotherapy'),
    subject: patientRef('paula'),
    encounter: { reference: 'Encounter/enc-paula-1' },
    performedPeriod: { start: '2024-01-15T10:00:00Z', end: '2024-01-15T10:50:00Z' },
    performer: [{ actor: practitionerRef('okafor') }],
  };
  const report: DiagnosticReport = {
    resourceType: 'DiagnosticReport',
    id: 'dr-alice-labs',
    meta: meta(),
    status: 'final',
    category: [cc('http://terminology.hl7.org/CodeSystem/v2-0074', 'LAB', 'Laboratory')],
    code: cc(LOINC, '24323-8', 'Comprehensive metabolic 2000 panel - Serum or Plasma'),
    subject: patientRef('alice'),
    effectiveDateTime: '2024-02-11T07:45:00Z',
    issued: '2024-02-11T16:00:00.000Z',
    performer: [practitionerRef('lab')],
    result: [{ reference: `Observation/${DEMO.containedObservation}` }, { reference: 'Observation/obs-alice-hba1c' }],
    conclusion: 'Fasting glucose mildly elevated.',
  };
  const document: DocumentReference = {
    resourceType: 'DocumentReference',
    id: DEMO.documentReference,
    meta: meta(),
    status: 'current',
    type: cc(LOINC, '11506-3', 'Progress note'),
    subject: patientRef('alice'),
    date: '2024-02-10T15:00:00Z',
    author: [practitionerRef('reyes')],
    content: [
      {
        attachment: {
          contentType: 'text/plain',
          // Names stay out of the body on purpose: a test decoding it must find none.
          data: Buffer.from(DEMO.documentText, 'utf8').toString('base64'),
          title: 'Progress note 2024-02-10',
        },
      },
    ],
    context: { encounter: [{ reference: 'Encounter/enc-alice-1' }] },
  };
  const medication: MedicationRequest = {
    resourceType: 'MedicationRequest',
    id: 'medreq-alice-lisinopril',
    meta: meta(),
    status: 'active',
    intent: 'order',
    medicationCodeableConcept: cc('http://www.nlm.nih.gov/research/umls/rxnorm', '314076', 'lisinopril 10 MG Oral Tablet'),
    subject: patientRef('alice'),
    encounter: { reference: 'Encounter/enc-alice-1' },
    authoredOn: '2024-02-10',
    requester: practitionerRef('reyes'),
    dosageInstruction: [{ text: '10 mg by mouth once daily' }],
    note: note(DEMO.notes.medication, 'reyes'),
  };
  const allergy: AllergyIntolerance = {
    resourceType: 'AllergyIntolerance',
    id: 'allergy-alice-penicillin',
    meta: meta(),
    clinicalStatus: cc('http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', 'active', 'Active'),
    code: cc(SNOMED, '91936005', 'Allergy to penicillin'),
    patient: patientRef('alice'),
    recordedDate: '2019-06-01',
    recorder: practitionerRef('reyes'),
    reaction: [{ manifestation: [cc(SNOMED, '271807003', 'Skin rash')] }],
  };
  const immunization: Immunization = {
    resourceType: 'Immunization',
    id: 'imm-alice-flu',
    meta: meta(),
    status: 'completed',
    vaccineCode: cc('http://hl7.org/fhir/sid/cvx', '158', 'influenza, injectable, quadrivalent'),
    patient: patientRef('alice'),
    occurrenceDateTime: '2023-10-05',
    performer: [{ actor: practitionerRef('reyes') }],
    lotNumber: 'FLU-23-0042',
  };
  return [procedure, psychotherapy, report, document, medication, allergy, immunization];
}

function financial(): Resource[] {
  const coverage = (key: 'alice' | 'brian' | 'paula'): Coverage => ({
    resourceType: 'Coverage',
    id: `cov-${key}`,
    meta: meta(),
    identifier: [
      {
        type: { coding: [{ system: V2_0203, code: 'MB', display: 'Member Number' }] },
        system: MEMBER_ID_SYSTEM,
        value: DEMO.memberIds[key],
      },
    ],
    status: 'active',
    subscriber: patientRef(key),
    subscriberId: DEMO.memberIds[key],
    beneficiary: patientRef(key),
    relationship: cc('http://terminology.hl7.org/CodeSystem/subscriber-relationship', 'self', 'Self'),
    period: { start: '2024-01-01', end: '2024-12-31' },
    payor: [payerRef()],
    class: [
      {
        type: cc('http://terminology.hl7.org/CodeSystem/coverage-class', 'group', 'Group'),
        value: 'GRP-5501',
        name: 'Beacon Employees PPO',
      },
    ],
  });
  // A self-paid claim names the patient's self-pay Coverage and no insurer.
  const claim = (id: string, key: 'alice' | 'paula' | 'brian', enc: string, cond: string, icd: string, amount: number, date = '2024-02-10'): Claim => ({
    resourceType: 'Claim',
    id,
    meta: meta(...(key === 'paula' ? [label.psy()] : [])),
    status: 'active',
    type: cc('http://terminology.hl7.org/CodeSystem/claim-type', 'professional', 'Professional'),
    use: 'claim',
    patient: patientRef(key),
    billablePeriod: { start: date, end: date },
    created: key === 'brian' ? date : '2024-02-12',
    ...(key === 'brian' ? {} : { insurer: payerRef() }),
    provider: hospitalRef(),
    priority: cc('http://terminology.hl7.org/CodeSystem/processpriority', 'normal', 'Normal'),
    diagnosis: [{ sequence: 1, diagnosisReference: { reference: `Condition/${cond}` } }],
    insurance: [{ sequence: 1, focal: true, coverage: { reference: `Coverage/${key === 'brian' ? DEMO.consents.payerRestriction.coverage : `cov-${key}`}` } }],
    item: [
      {
        sequence: 1,
        productOrService: cc('http://www.ama-assn.org/go/cpt', '99214', 'Office visit, established patient'),
        servicedDate: date,
        unitPrice: { value: amount, currency: 'USD' },
        net: { value: amount, currency: 'USD' },
        encounter: [{ reference: `Encounter/${enc}` }],
        diagnosisSequence: [1],
      },
    ],
    total: { value: amount, currency: 'USD' },
    supportingInfo: [
      {
        sequence: 1,
        category: cc('http://terminology.hl7.org/CodeSystem/claiminformationcategory', 'info', 'Information'),
        valueString: `ICD-10 ${icd}`,
      },
    ],
  });
  const eob: ExplanationOfBenefit = {
    resourceType: 'ExplanationOfBenefit',
    id: 'eob-alice-1',
    meta: meta(),
    status: 'active',
    type: cc('http://terminology.hl7.org/CodeSystem/claim-type', 'professional', 'Professional'),
    use: 'claim',
    patient: patientRef('alice'),
    billablePeriod: { start: '2024-02-10', end: '2024-02-10' },
    created: '2024-03-01',
    insurer: payerRef(),
    provider: hospitalRef(),
    claim: { reference: 'Claim/claim-alice-1' },
    outcome: 'complete',
    insurance: [{ focal: true, coverage: { reference: 'Coverage/cov-alice' } }],
    item: [
      {
        sequence: 1,
        productOrService: cc('http://www.ama-assn.org/go/cpt', '99214', 'Office visit, established patient'),
        servicedDate: '2024-02-10',
        adjudication: [
          { category: cc('http://terminology.hl7.org/CodeSystem/adjudication', 'benefit', 'Benefit Amount'), amount: { value: 140, currency: 'USD' } },
        ],
      },
    ],
    payment: { amount: { value: 140, currency: 'USD' }, date: '2024-03-05' },
    processNote: [{ number: 1, type: 'display', text: DEMO.notes.eob }],
  };
  const PR = DEMO.consents.payerRestriction;
  const selfPay: Coverage = {
    resourceType: 'Coverage',
    id: PR.coverage,
    meta: meta(),
    status: 'active',
    type: cc('http://terminology.hl7.org/CodeSystem/coverage-selfpay', 'pay', 'PAY'),
    beneficiary: patientRef('brian'),
    relationship: cc('http://terminology.hl7.org/CodeSystem/subscriber-relationship', 'self', 'Self'),
    payor: [patientRef('brian')],
  };
  return [
    coverage('alice'),
    coverage('brian'),
    coverage('paula'),
    selfPay,
    claim('claim-alice-1', 'alice', 'enc-alice-1', DEMO.hypertension, 'I10', 180),
    claim(DEMO.psyClaim, 'paula', 'enc-paula-1', DEMO.psyCondition, 'F32.1', 220),
    claim(PR.claim, 'brian', PR.encounter, PR.condition, 'N52.9', 240, '2024-04-08'),
    eob,
  ];
}

function appointments(): Appointment[] {
  const appt = (id: string, key: keyof typeof P, prac: keyof typeof DEMO.practitioners, start: string): Appointment => ({
    resourceType: 'Appointment',
    id,
    meta: meta(),
    status: 'booked',
    serviceType: [cc(SNOMED, '394814009', 'General practice')],
    description: 'Follow-up visit',
    start,
    end: new Date(Date.parse(start) + 30 * 60_000).toISOString(),
    participant: [
      { actor: patientRef(key), status: 'accepted' },
      { actor: practitionerRef(prac), status: 'accepted' },
    ],
  });
  return [
    appt('appt-alice-1', 'alice', 'reyes', '2024-07-15T14:00:00.000Z'),
    appt('appt-brian-1', 'brian', 'chen', '2024-07-16T09:30:00.000Z'),
    appt('appt-grace-1', 'grace', 'reyes', '2024-07-18T15:00:00.000Z'),
  ];
}

/**
 * The patients' consent directives (DEMO.consents): active, scope patient-privacy, each signed by
 * the patient and held by the hospital. Provisions name purposes (v3-ActReason), security labels,
 * actors and data; a nested provision is an exception to the one it is in.
 */
function consents(): Consent[] {
  const C = DEMO.consents;
  const purpose = (code: string, display: string): Coding => ({ system: ACT_REASON, code, display });
  const action = (code: 'access' | 'use' | 'disclose') => ({ coding: [{ system: CONSENT_ACTION, code }] });
  const consent = (id: string, key: keyof typeof P, dateTime: string, rule: 'OPTIN' | 'OPTOUT', provision: ConsentProvision): Consent => ({
    resourceType: 'Consent',
    id,
    meta: meta(),
    status: 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy', display: 'Privacy Consent' }] },
    category: [cc(LOINC, '59284-0', 'Patient Consent')],
    patient: patientRef(key),
    dateTime,
    performer: [patientRef(key)],
    organization: [hospitalRef()],
    policyRule: { coding: [{ system: ACT_CODE_SYSTEM, code: rule, display: rule === 'OPTIN' ? 'opt-in' : 'opt-out' }] },
    provision,
  });
  return [
    // Everything may be shared as usual, except for research.
    consent(C.researchOptOut.id, C.researchOptOut.patient, '2024-05-05T13:20:00Z', 'OPTIN', {
      provision: [{ type: 'deny', action: [action('use')], purpose: [purpose('HRESCH', 'healthcare research')] }],
    }),
    // Not to be disclosed for payment: the self-paid visit and everything that references it.
    consent(C.payerRestriction.id, C.payerRestriction.patient, '2024-04-08T16:30:00Z', 'OPTIN', {
      provision: [
        {
          type: 'deny',
          action: [action('disclose')],
          purpose: [purpose('HPAYMT', 'healthcare payment')],
          data: [
            { meaning: 'related', reference: { reference: `Encounter/${C.payerRestriction.encounter}` } },
            // The self-pay arrangement itself: no Encounter reference leads to it.
            { meaning: 'instance', reference: { reference: `Coverage/${C.payerRestriction.coverage}` } },
          ],
        },
      ],
    }),
    // 42 CFR Part 2: substance use disorder records withheld, except from Dr. Reyes for treatment.
    consent(C.part2.id, C.part2.patient, '2024-01-15T11:00:00Z', 'OPTIN', {
      provision: [
        {
          type: 'deny',
          securityLabel: [label.sud()],
          provision: [
            {
              type: 'permit',
              actor: [
                {
                  role: cc('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'IRCP', 'information recipient'),
                  reference: practitionerRef('reyes'),
                },
              ],
              action: [action('access')],
              purpose: [purpose(C.part2.purpose, 'treatment')],
            },
          ],
        },
      ],
    }),
    // Nothing was to be shared during 2023; the period has ended, so the consent no longer applies.
    consent(C.expired.id, C.expired.patient, '2022-12-20T10:00:00Z', 'OPTOUT', { period: C.expired.period }),
  ];
}

/**
 * Alice's first version, before she changed her phone number: seeding it before the current
 * version gives `Patient/pat-alice/_history` two versions, the older holding `DEMO.phones.aliceOld`.
 */
export function aliceFirstVersion(): Patient {
  const current = patients()[0];
  return {
    ...current,
    meta: { versionId: '1', lastUpdated: '2023-01-10T09:00:00.000Z' },
    telecom: [{ system: 'phone', value: DEMO.phones.aliceOld, use: 'home' }],
    text: narrative(`<p>${DEMO.names.alice}, SSN ${DEMO.ssn.alice}, phone ${DEMO.phones.aliceOld}</p>`),
  };
}

/**
 * Every seeded resource, current versions, in dependency order (referenced resources first).
 * Alice's Patient is version 2 here; seed `aliceFirstVersion()` before it to get her history.
 * `now` dates the encounters that make a care relationship current (days before its UTC day).
 */
export function demoResources(now: Date = new Date()): Resource[] {
  const [alice, ...others] = patients();
  const [relationships, tasks] = partition(careRelationships(), (r) => r.resourceType !== 'Task');
  return [
    ...organizations(),
    ...practitioners(),
    { ...alice, meta: { versionId: '2', lastUpdated: SEED_INSTANT } },
    ...others,
    ...conditions(),
    ...relationships,
    ...encounters(now),
    ...vitals(),
    ...otherClinical(),
    ...financial(),
    ...appointments(),
    ...tasks,
    ...consents(),
  ];
}

function partition<T>(items: readonly T[], keep: (item: T) => boolean): [T[], T[]] {
  return [items.filter(keep), items.filter((i) => !keep(i))];
}
